"""Issue 12: the admin page in a real browser (Debian's Chromium, driven by Playwright).

Log in, see the failure banner, retry the failure, watch the invoice turn synced; a
screenshot of each page is kept in var/screenshots/ for a person to look at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from tests.integration.test_outbound import Setup, _invoice
from tests.integration.test_outbound import setup as setup  # the fixture
from tests.syncd_process import ADMIN

ROOT = Path(__file__).resolve().parent.parent.parent
SHOTS = ROOT / "var" / "screenshots"


def _chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        raise RuntimeError("Chromium is not installed: apt-get install -y chromium")
    return found


@pytest.mark.rules('on_missing = "create"', 'on_missing = "fail"')
async def test_an_admin_retries_a_failure_in_a_browser(setup: Setup):
    """HS2: log in once, the banner shows, Retry fixes it, the invoice turns synced."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    origin = f"http://127.0.0.1:{setup.syncd.http_port}"
    await setup.crm.send("acme", "invoice.upserted", _invoice(1, "open"))
    await setup.state("INV-1", lambda d: d["sync_state"] == "failed")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        page = await browser.new_page(viewport={"width": 1200, "height": 800})
        await page.goto(origin + "/")
        await expect(page).to_have_url(origin + "/login")
        await page.get_by_label("Admin token").fill(ADMIN)
        await page.get_by_role("button", name="Log in").click()
        banner = page.get_by_role("alert")
        await expect(banner).to_contain_text("acme: 1 failed sync needs a look")
        await page.screenshot(path=str(SHOTS / "admin-home.png"), full_page=True)
        await banner.get_by_role("link", name="see and retry").click()
        row = page.locator("tr.failure")
        await expect(row).to_contain_text("no item named 'Consulting'")
        await page.screenshot(path=str(SHOTS / "admin-failures.png"), full_page=True)
        await setup.qbo.create(
            "Item", {"Name": "Consulting", "IncomeAccountRef": {"value": "1"}}
        )
        await row.get_by_role("button", name="Retry").click()
        await expect(page.get_by_role("status")).to_contain_text("Queued again")
        await setup.state("INV-1", lambda d: d["sync_state"] == "synced")
        await page.goto(origin + "/tenants/acme/invoices")
        invoice = page.locator("tr.invoice", has_text="INV-1")
        await expect(invoice).to_contain_text("synced")
        await expect(invoice).to_contain_text("1001")
        await page.goto(origin + "/")
        await expect(page.get_by_role("alert")).to_have_count(0)
        await page.screenshot(path=str(SHOTS / "admin-page.png"), full_page=True)
        await page.goto(origin + "/tenants/acme/rules")
        await expect(page.locator("svg g.status")).to_have_count(8)
        await page.screenshot(path=str(SHOTS / "admin-rules.png"), full_page=True)
        # issue 27: a bookkeeper edits the invoice's lines; the drift page finds it
        [copy] = await setup.qbo_rows("select * from Invoice")
        line = {**copy["Line"][0], "Amount": "300.00"}
        line["SalesItemLineDetail"] = {**line["SalesItemLineDetail"], "Qty": 3}
        await setup.qbo.admin(
            "POST", f"realms/{setup.realm}/invoice/{copy['Id']}", {"Line": [line]}
        )
        await page.goto(origin + "/")
        await page.get_by_role("link", name="Drift (not checked)").click()
        await page.get_by_role("button", name="Check now").click()
        found = page.locator("tr.drift", has_text="lines")
        for _ in range(30):  # the check runs within seconds: reload until it shows
            if await found.count():
                break
            await page.wait_for_timeout(500)
            await page.reload()
        await expect(found).to_contain_text("edited in QBO by hand")
        await expect(page.locator("tr.drift", has_text="total")).to_contain_text("300")
        await page.screenshot(path=str(SHOTS / "admin-drift.png"), full_page=True)
        await browser.close()
