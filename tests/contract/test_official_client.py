"""An official-style QBO client (python-quickbooks + intuit-oauth) works unchanged.

The only settings are where Intuit lives: the discovery document's URL for intuit-oauth
and the API origin for python-quickbooks.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

import pypdf
import pytest
import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from quickbooks import QuickBooks
from quickbooks.batch import batch_create
from quickbooks.cdc import change_data_capture
from quickbooks.exceptions import QuickbooksException
from quickbooks.objects.account import Account
from quickbooks.objects.base import LinkedTxn, Ref
from quickbooks.objects.creditmemo import CreditMemo
from quickbooks.objects.customer import Customer
from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
from quickbooks.objects.invoice import Invoice
from quickbooks.objects.item import Item
from quickbooks.objects.payment import Payment, PaymentLine
from quickbooks.objects.refundreceipt import RefundReceipt
from quickbooks.objects.tax import TxnTaxDetail

from tests.sandbox_process import CLIENT_ID, CLIENT_SECRET, REDIRECT, SandboxProcess


@pytest.fixture(autouse=True)
def _plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    # oauthlib insists on https unless told this is a local test (its documented switch)
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def _connect(sandbox: SandboxProcess) -> tuple[AuthClient, QuickBooks]:
    auth = AuthClient(
        CLIENT_ID,
        CLIENT_SECRET,
        REDIRECT,
        environment=sandbox.origin + "/.well-known/openid_configuration",
    )
    url = auth.get_authorization_url([Scopes.ACCOUNTING])
    callback = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
    params = parse_qs(urlparse(callback).query)
    assert params["state"] == [auth.state_token]
    auth.get_bearer_token(params["code"][0], realm_id=params["realmId"][0])
    client = QuickBooks(
        auth_client=auth,
        refresh_token=auth.refresh_token,
        company_id=auth.realm_id,
        minorversion=75,
    )
    client.api_url_v3 = sandbox.origin + "/v3"
    return auth, client


def test_common_flows_through_python_quickbooks(sandbox: SandboxProcess):
    """OAuth, customers, items, invoices, payments, queries, batch, CDC, void, send, PDF, refresh."""
    auth, client = _connect(sandbox)
    customer = Customer()
    customer.DisplayName = "Official Client Co"
    customer = customer.save(qb=client)
    assert customer.Id and str(customer.SyncToken) == "0"
    item = Item()
    item.Name, item.Type = "Widget service", "Service"
    item.IncomeAccountRef = Ref()
    item.IncomeAccountRef.value = "1"
    item = item.save(qb=client)

    invoice = Invoice()
    line = SalesItemLine()
    line.Amount = 120
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = item.to_ref()
    invoice.Line.append(line)
    invoice.CustomerRef = customer.to_ref()
    invoice = invoice.save(qb=client)
    assert float(invoice.TotalAmt) == 120 and invoice.DocNumber

    found = Customer.filter(DisplayName="Official Client Co", qb=client)
    assert [c.Id for c in found] == [customer.Id]
    assert Invoice.count(qb=client) == 1

    payment = Payment()
    payment.TotalAmt = 120
    payment.CustomerRef = customer.to_ref()
    pay_line = PaymentLine()
    pay_line.Amount = 120
    pay_line.LinkedTxn.append(invoice.to_linked_txn())
    payment.Line.append(pay_line)
    payment = payment.save(qb=client)
    assert float(Invoice.get(invoice.Id, qb=client).Balance) == 0

    extra = [Customer.from_json({"DisplayName": f"Batch {n}"}) for n in range(3)]
    result = batch_create(extra, qb=client)
    assert len(result.successes) == 3 and not result.faults

    since = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    changes = change_data_capture([Invoice, Customer], since, qb=client)
    assert len(changes.Customer) == 4

    second = Invoice.from_json(
        {
            "CustomerRef": {"value": customer.Id},
            "Line": [
                {
                    "DetailType": "SalesItemLineDetail",
                    "Amount": 10,
                    "SalesItemLineDetail": {"ItemRef": {"value": item.Id}},
                }
            ],
        }
    )
    second = second.save(qb=client)
    second.send(qb=client, send_to="ap@official.test")
    assert Invoice.get(second.Id, qb=client).EmailStatus == "EmailSent"
    pdf = second.download_pdf(qb=client)
    assert (
        pypdf.PdfReader(io.BytesIO(pdf))
        .pages[0]
        .extract_text()
        .startswith("Sandbox Company")
    )
    second = Invoice.get(second.Id, qb=client)
    second.void(qb=client)
    assert float(Invoice.get(second.Id, qb=client).TotalAmt) == 0

    old_refresh = auth.refresh_token
    auth.refresh()
    assert auth.refresh_token != old_refresh
    assert Customer.get(customer.Id, qb=client).DisplayName == "Official Client Co"


def test_faults_reach_the_client_as_its_exceptions(sandbox: SandboxProcess):
    """QBO faults parse into python-quickbooks' own exceptions (codes intact)."""
    _, client = _connect(sandbox)
    first = Customer()
    first.DisplayName = "Twin"
    first.save(qb=client)
    twin = Customer()
    twin.DisplayName = "Twin"
    with pytest.raises(QuickbooksException) as info:
        twin.save(qb=client)
    assert info.value.error_code == 6240


def test_an_invoice_as_the_client_sends_it_gets_qbos_dates_and_tax(
    sandbox: SandboxProcess,
):
    """HL6, PD2, qbo.md §2/§10: the client's empty dates and `TotalTax: 0` are QBO's to fill.

    python-quickbooks sends `"TxnDate": ""`, `"DueDate": ""` and `"TotalTax": 0` beside a
    tax code; QBO dates the invoice today (company time), dues it by the company's
    default terms (Net 30) and, with manual sales tax, computes the tax from
    `TxnTaxCodeRef` (the 0 is no override).
    """
    _, client = _connect(sandbox)
    customer = Customer()
    customer.DisplayName = "Dated Co"
    customer = customer.save(qb=client)
    item = Item()
    item.Name, item.Type = "Dated service", "Service"
    item.IncomeAccountRef = Ref()
    item.IncomeAccountRef.value = "1"
    item = item.save(qb=client)
    company_tz = timezone(timedelta(hours=-7))
    before = datetime.now(company_tz).date()

    invoice = Invoice()
    line = SalesItemLine()
    line.Amount = 120
    line.SalesItemLineDetail = SalesItemLineDetail()
    line.SalesItemLineDetail.ItemRef = item.to_ref()
    line.SalesItemLineDetail.TaxCodeRef = Ref()
    line.SalesItemLineDetail.TaxCodeRef.value = "TAX"
    invoice.Line.append(line)
    invoice.CustomerRef = customer.to_ref()
    invoice.TxnTaxDetail = TxnTaxDetail()
    invoice.TxnTaxDetail.TxnTaxCodeRef = Ref()
    invoice.TxnTaxDetail.TxnTaxCodeRef.value = "2"  # California, 8 %
    sent = json.loads(invoice.to_json())
    assert (sent["TxnDate"], sent["DueDate"], sent["TxnTaxDetail"]["TotalTax"]) == (
        "",
        "",
        0,
    )
    invoice = invoice.save(qb=client)

    after = datetime.now(company_tz).date()
    day = date.fromisoformat(invoice.TxnDate)
    assert day in {before, after}
    assert date.fromisoformat(invoice.DueDate) == day + timedelta(days=30)
    assert invoice.SalesTermRef.value == "3"
    assert Decimal(str(invoice.TxnTaxDetail.TotalTax)) == Decimal("9.60")
    assert Decimal(str(invoice.TotalAmt)) == Decimal("129.60")


def test_credit_memos_refunds_and_payments_of_several_lines(sandbox: SandboxProcess):
    """Issue 26: python-quickbooks, unchanged, for credit memos, refunds, payment lines.

    A Payment whose lines pay two invoices and apply a credit (qbo.md §11).
    """
    _, client = _connect(sandbox)
    customer = Customer.from_json({"DisplayName": "Credit Client Co"}).save(qb=client)
    item = Item.from_json(
        {"Name": "Refundable", "Type": "Service", "IncomeAccountRef": {"value": "1"}}
    ).save(qb=client)

    def sale(cls: type[Any], amount: int, **extra: Any) -> Any:
        body = {
            "CustomerRef": {"value": customer.Id},
            "Line": [
                {
                    "DetailType": "SalesItemLineDetail",
                    "Amount": amount,
                    "SalesItemLineDetail": {"ItemRef": {"value": item.Id}},
                }
            ],
            **extra,
        }
        return cls.from_json(body).save(qb=client)

    first, second = sale(Invoice, 70), sale(Invoice, 50)
    memo = sale(CreditMemo, 30)
    assert float(CreditMemo.get(memo.Id, qb=client).RemainingCredit) == 30

    payment = Payment()
    payment.CustomerRef = customer.to_ref()
    payment.TotalAmt = 90
    for kind, txn, amount in (
        ("Invoice", first, 70),
        ("Invoice", second, 50),
        ("CreditMemo", memo, 30),
    ):
        line = PaymentLine()
        line.Amount = amount
        link = LinkedTxn()
        link.TxnId, link.TxnType = txn.Id, kind
        line.LinkedTxn.append(link)
        payment.Line.append(line)
    payment = payment.save(qb=client)
    assert float(payment.UnappliedAmt) == 0
    assert float(Invoice.get(first.Id, qb=client).Balance) == 0
    assert float(Invoice.get(second.Id, qb=client).Balance) == 0
    assert float(CreditMemo.get(memo.Id, qb=client).RemainingCredit) == 0

    checking = Account.filter(Name="Checking", qb=client)[0]
    refund = sale(RefundReceipt, 20, DepositToAccountRef={"value": checking.Id})
    assert float(RefundReceipt.get(refund.Id, qb=client).TotalAmt) == 20
    refund.delete(qb=client)
    Payment.get(payment.Id, qb=client).delete(qb=client)
    assert float(Invoice.get(first.Id, qb=client).Balance) == 70
    assert float(CreditMemo.get(memo.Id, qb=client).RemainingCredit) == 30
