"""qbo.md §1-§2: envelopes, entity shapes, what QBO fills in, void and delete."""

from __future__ import annotations

import re
from decimal import Decimal

from tests.sandbox_process import Connection

LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-07:00$")


async def test_single_entity_envelope_and_common_fields(qbo: Connection):
    """§1: `{"Customer": {...}, "time"}`, string Id, SyncToken "0", MetaData at -07:00."""
    answer = await qbo.call(
        "POST", "customer", {"DisplayName": "Acme Ltd"}, params={"minorversion": "75"}
    )
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-07:00$", answer["time"])
    customer = answer["Customer"]
    assert isinstance(customer["Id"], str)
    assert customer["SyncToken"] == "0"
    assert (customer["domain"], customer["sparse"]) == ("QBO", False)
    assert LOCAL_TIME.match(customer["MetaData"]["CreateTime"])
    assert customer["CurrencyRef"] == {"value": "USD", "name": "United States Dollar"}
    for key in (
        "Taxable",
        "Job",
        "BillWithParent",
        "Balance",
        "BalanceWithJobs",
        "PreferredDeliveryMethod",
        "IsProject",
        "FullyQualifiedName",
        "PrintOnCheckName",
        "Active",
    ):
        assert key in customer


async def test_invoice_create_fills_in_what_qbo_fills_in(qbo: Connection):
    """§2 Invoice: DocNumber, DueDate +30, SubTotal line, line ids, totals, statuses."""
    customer = await qbo.customer(BillAddr={"Line1": "1 Main St", "City": "Bayshore"})
    item = await qbo.item()
    first = await qbo.invoice(customer, item, "100.00", TxnDate="2026-01-15")
    second = await qbo.invoice(customer, item, "50.00", TxnDate="2026-01-15")
    assert int(second["DocNumber"]) == int(first["DocNumber"]) + 1
    assert first["DueDate"] == "2026-02-14"
    sale, subtotal = first["Line"]
    assert (sale["Id"], sale["LineNum"]) == ("1", 1)
    assert sale["SalesItemLineDetail"]["ItemAccountRef"]["name"] == "Services"
    assert sale["SalesItemLineDetail"]["TaxCodeRef"] == {"value": "NON"}
    assert subtotal == {
        "Amount": Decimal("100.00"),
        "DetailType": "SubTotalLineDetail",
        "SubTotalLineDetail": {},
    }
    assert first["CustomerRef"] == {"value": customer["Id"], "name": "Acme Ltd"}
    assert first["BillAddr"]["City"] == "Bayshore"
    assert first["TxnTaxDetail"] == {"TotalTax": 0}
    assert first["TotalAmt"] == first["Balance"] == Decimal("100.00")
    assert (first["EmailStatus"], first["LinkedTxn"], first["CustomField"]) == (
        "NotSet",
        [],
        [],
    )


async def test_discount_tax_and_custom_fields(qbo: Connection):
    """§2: one discount line, TxnTaxDetail from the tax code's rate, CustomField by name."""
    customer, item = await qbo.customer(), await qbo.item()
    body = {
        "CustomerRef": {"value": customer["Id"]},
        "Line": [
            {
                "DetailType": "SalesItemLineDetail",
                "Amount": Decimal("200.00"),
                "SalesItemLineDetail": {
                    "ItemRef": {"value": item["Id"]},
                    "Qty": 2,
                    "UnitPrice": Decimal("100.00"),
                    "TaxCodeRef": {"value": "TAX"},
                },
            },
            {
                "DetailType": "DiscountLineDetail",
                "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": 5},
            },
        ],
        "ApplyTaxAfterDiscount": True,
        "TxnTaxDetail": {"TxnTaxCodeRef": {"value": "2"}},
        "CustomField": [
            {"Name": "PO Number", "StringValue": "PO-77"},
            {"Name": "Nope", "StringValue": "x"},
        ],
    }
    invoice = await qbo.create("Invoice", body)
    discount = [
        ln for ln in invoice["Line"] if ln["DetailType"] == "DiscountLineDetail"
    ]
    assert [d["Amount"] for d in discount] == [Decimal("10.00")]
    tax = invoice["TxnTaxDetail"]
    assert tax["TotalTax"] == Decimal("15.20")  # 8 % of 190.00 (after the discount)
    assert tax["TaxLine"][0]["TaxLineDetail"]["TaxPercent"] == 8
    assert invoice["TotalAmt"] == Decimal("205.20")
    assert invoice["CustomField"] == [
        {
            "DefinitionId": "1",
            "Name": "PO Number",
            "Type": "StringType",
            "StringValue": "PO-77",
        }
    ]


async def test_void_keeps_the_invoice_readable_at_zero(qbo: Connection):
    """§2 voided invoice: Balance 0, TotalAmt 0, PrivateNote "Voided", still readable."""
    invoice = await qbo.invoice(await qbo.customer(), await qbo.item())
    key = {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]}
    voided = (await qbo.call("POST", "invoice", key, params={"operation": "void"}))[
        "Invoice"
    ]
    assert (voided["Balance"], voided["TotalAmt"]) == (0, 0)
    assert "Voided" in voided["PrivateNote"]
    assert voided["SyncToken"] == "1"
    again = (await qbo.call("GET", f"invoice/{invoice['Id']}"))["Invoice"]
    assert again["TotalAmt"] == 0


async def test_delete_answers_deleted_then_610_and_no_rows(qbo: Connection):
    """§2 deleted invoice: `status: Deleted`, read gives 610, query finds nothing."""
    invoice = await qbo.invoice(await qbo.customer(), await qbo.item())
    key = {"Id": invoice["Id"], "SyncToken": "0"}
    answer = await qbo.call("POST", "invoice", key, params={"operation": "delete"})
    assert answer["Invoice"] == {
        "Id": invoice["Id"],
        "status": "Deleted",
        "domain": "QBO",
    }
    fault = await qbo.call("GET", f"invoice/{invoice['Id']}", expect=400)
    error = fault["Fault"]["Error"][0]
    assert error["code"] == "610"
    assert error["Detail"] == "Another user has deleted this transaction."
    rows = await qbo.call(
        "GET",
        "query",
        params={"query": f"select * from Invoice where Id = '{invoice['Id']}'"},
    )
    assert rows["QueryResponse"] == {}


async def test_customer_names_are_required_and_unique(qbo: Connection):
    """§2 Customer: 6080 without a name; 6240 for a DisplayName already in use."""
    fault = await qbo.call("POST", "customer", {"CompanyName": "x"}, expect=400)
    assert fault["Fault"]["Error"][0]["code"] == "6080"
    named = await qbo.create("Customer", {"GivenName": "Ada", "FamilyName": "Lovelace"})
    assert named["DisplayName"] == "Ada Lovelace"
    await qbo.customer("King's Groceries")
    fault = await qbo.call(
        "POST", "customer", {"DisplayName": "King's Groceries"}, expect=400
    )
    error = fault["Fault"]
    assert (error["type"], error["Error"][0]["code"]) == ("ValidationFault", "6240")
    assert error["Error"][0]["Message"] == "Duplicate Name Exists Error"


async def test_item_and_account_shapes(qbo: Connection):
    """§2 Item/Account: server-filled fields; an account needs a type (6010)."""
    item = await qbo.item()
    assert item["IncomeAccountRef"] == {"value": "1", "name": "Services"}
    for key, value in (
        ("Active", True),
        ("Taxable", False),
        ("UnitPrice", 0),
        ("TrackQtyOnHand", False),
        ("Type", "Service"),
    ):
        assert item[key] == value
    fault = await qbo.call("POST", "account", {"Name": "Odd"}, expect=400)
    assert fault["Fault"]["Error"][0]["code"] == "6010"
    account = await qbo.create(
        "Account", {"Name": "Consulting income", "AccountType": "Income"}
    )
    assert (account["Classification"], account["Active"]) == ("Revenue", True)


async def test_payments_link_both_sides_and_void_restores(qbo: Connection):
    """§2 Payment: unapplied; applied (partial, full) with LinkedTxn both ways; void."""
    customer, item = await qbo.customer(), await qbo.item()
    loose = await qbo.create(
        "Payment", {"CustomerRef": {"value": customer["Id"]}, "TotalAmt": 100}
    )
    assert (loose["UnappliedAmt"], loose["Line"]) == (100, [])
    assert loose["DepositToAccountRef"]["name"] == "Undeposited Funds"
    invoice = await qbo.invoice(customer, item, "387.00")

    def pay(amount: str) -> dict[str, object]:
        return {
            "CustomerRef": {"value": customer["Id"]},
            "TotalAmt": Decimal(amount),
            "Line": [
                {
                    "Amount": Decimal(amount),
                    "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
                }
            ],
        }

    first = await qbo.create("Payment", pay("87.00"))
    assert first["UnappliedAmt"] == 0
    partly = (await qbo.call("GET", f"invoice/{invoice['Id']}"))["Invoice"]
    assert partly["Balance"] == Decimal("300.00")
    assert partly["LinkedTxn"] == [{"TxnId": first["Id"], "TxnType": "Payment"}]
    second = await qbo.create("Payment", pay("300.00"))
    paid = (await qbo.call("GET", f"invoice/{invoice['Id']}"))["Invoice"]
    assert paid["Balance"] == 0
    assert {t["TxnId"] for t in paid["LinkedTxn"]} == {first["Id"], second["Id"]}
    key = {"Id": second["Id"], "SyncToken": second["SyncToken"], "sparse": True}
    voided = (
        await qbo.call(
            "POST", "payment", key, params={"operation": "update", "include": "void"}
        )
    )["Payment"]
    assert (voided["TotalAmt"], voided["UnappliedAmt"], voided["PrivateNote"]) == (
        0,
        0,
        "Voided",
    )
    reopened = (await qbo.call("GET", f"invoice/{invoice['Id']}"))["Invoice"]
    assert reopened["Balance"] == Decimal("300.00")
    too_much = await qbo.call("POST", "payment", pay("999.00"), expect=400)
    assert too_much["Fault"]["Error"][0]["code"] == "6000"


async def test_sales_receipt_is_paid_at_sale_and_voids_like_a_payment(qbo: Connection):
    """§2 SalesReceipt: Balance 0, deposit account; `include=void`."""
    customer, item = await qbo.customer(), await qbo.item()
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("45.00"),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    receipt = await qbo.create(
        "SalesReceipt", {"CustomerRef": {"value": customer["Id"]}, "Line": [line]}
    )
    assert (receipt["TotalAmt"], receipt["Balance"]) == (Decimal("45.00"), 0)
    assert receipt["DepositToAccountRef"]["name"] == "Undeposited Funds"
    key = {"Id": receipt["Id"], "SyncToken": receipt["SyncToken"], "sparse": True}
    voided = (
        await qbo.call(
            "POST",
            "salesreceipt",
            key,
            params={"operation": "update", "include": "void"},
        )
    )["SalesReceipt"]
    assert voided["TotalAmt"] == 0


async def test_tax_codes_are_read_only_and_preferences_readable(qbo: Connection):
    """§2 TaxCode: read and query only; Preferences carry currency and custom fields."""
    codes = await qbo.call("GET", "query", params={"query": "select * from TaxCode"})
    assert {"TAX", "NON", "2"} <= {c["Id"] for c in codes["QueryResponse"]["TaxCode"]}
    fault = await qbo.call("POST", "taxcode", {"Name": "Mine"}, expect=400)
    assert fault["Fault"]["Error"][0]["code"] == "500"
    prefs = (await qbo.call("GET", "preferences"))["Preferences"]
    assert prefs["CurrencyPrefs"] == {
        "MultiCurrencyEnabled": False,
        "HomeCurrency": {"value": "USD"},
    }


async def test_currency_must_be_the_customers_and_needs_multicurrency(qbo: Connection):
    """§2 Preferences: a foreign currency needs multicurrency (switched on in the UI only)."""
    fault = await qbo.call(
        "POST",
        "customer",
        {"DisplayName": "Euro Co", "CurrencyRef": {"value": "EUR"}},
        expect=400,
    )
    assert "Multicurrency is not enabled" in fault["Fault"]["Error"][0]["Detail"]
    await qbo.admin("POST", f"realms/{qbo.realm}/multicurrency")
    euro = await qbo.customer("Euro Co", CurrencyRef={"value": "EUR"})
    item = await qbo.item()
    fault = await qbo.call(
        "POST",
        "invoice",
        {
            "CustomerRef": {"value": euro["Id"]},
            "CurrencyRef": {"value": "USD"},
            "Line": [
                {
                    "DetailType": "SalesItemLineDetail",
                    "Amount": 5,
                    "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
                }
            ],
        },
        expect=400,
    )
    assert (
        "must be the currency of the customer" in fault["Fault"]["Error"][0]["Detail"]
    )
    invoice = await qbo.invoice(euro, item)
    assert invoice["CurrencyRef"]["value"] == "EUR"


async def test_send_and_pdf(qbo: Connection):
    """§1 send: EmailSent, DeliveryInfo, sendTo sets BillEmail; PDF is a real PDF."""
    import io

    import pypdf

    invoice = await qbo.invoice(await qbo.customer(), await qbo.item())
    fault = await qbo.call("POST", f"invoice/{invoice['Id']}/send", expect=400)
    assert fault["Fault"]["Error"][0]["element"] == "BillEmail"
    sent = (
        await qbo.call(
            "POST", f"invoice/{invoice['Id']}/send", params={"sendTo": "ap@acme.test"}
        )
    )["Invoice"]
    assert sent["EmailStatus"] == "EmailSent"
    assert sent["BillEmail"] == {"Address": "ap@acme.test"}
    assert sent["DeliveryInfo"]["DeliveryType"] == "Email"
    assert sent["SyncToken"] == "1"
    _, headers, data = await qbo.call("GET", f"invoice/{invoice['Id']}/pdf", raw=True)
    assert headers["Content-Type"] == "application/pdf"
    text = pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text()
    assert f"Invoice {invoice['DocNumber']}" in text
    assert "Total: 100.00 USD" in text


async def test_due_date_comes_from_terms(qbo: Connection):
    """§10/§2: no DueDate: the invoice's terms, else the customer's, else the default."""
    net15 = await qbo.create("Term", {"Name": "Net 15", "DueDays": 15})
    plain = await qbo.customer("Plain Co")
    termed = await qbo.customer("Termed Co", SalesTermRef={"value": net15["Id"]})
    item = await qbo.item()
    default = await qbo.invoice(plain, item, TxnDate="2026-03-01")
    assert (default["DueDate"], default["SalesTermRef"]["name"]) == (
        "2026-03-31",
        "Net 30",
    )
    customers = await qbo.invoice(termed, item, TxnDate="2026-03-01")
    assert (customers["DueDate"], customers["SalesTermRef"]["name"]) == (
        "2026-03-16",
        "Net 15",
    )
    own = await qbo.invoice(
        plain, item, TxnDate="2026-03-01", SalesTermRef={"value": net15["Id"]}
    )
    assert own["DueDate"] == "2026-03-16"
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": Decimal("5.00"),
        "SalesItemLineDetail": {"ItemRef": {"value": item["Id"]}},
    }
    receipt = await qbo.create(
        "SalesReceipt", {"CustomerRef": {"value": plain["Id"]}, "Line": [line]}
    )
    assert "DueDate" not in receipt
