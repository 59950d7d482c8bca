"""Signing in and out of the console, the language switch and CSRF, in a real browser."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.console.conftest import SCREENSHOTS, Console, Server


def test_password_sign_in_lands_on_the_page_asked_for_and_sign_out_ends_the_session(
    console: Console,
) -> None:
    console.goto("/overview")
    assert "/console/sign-in?next=/console/overview" in console.page.url
    console.screenshot("sign-in.en")
    console.page.get_by_label("Account").fill("acme")
    console.page.get_by_label("User", exact=True).fill("ana")
    console.page.get_by_label("Password").fill("correct horse battery")
    console.page.get_by_role("button", name="Sign in", exact=True).click()
    expect(console.page).to_have_url(console.url("/overview"))
    expect(console.page.locator(".who")).to_contain_text("ana")
    expect(console.page.locator(".who")).to_contain_text("acme")
    cookie = next(c for c in console.page.context.cookies() if c["name"] == "fluxo_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"

    console.page.get_by_role("button", name="Sign out").click()
    expect(console.page).to_have_url(console.url("/sign-in"))
    # The session was revoked, not only forgotten: the old cookie no longer opens a page.
    console.page.context.add_cookies(
        [{"name": "fluxo_session", "value": cookie["value"], "url": console.url("/")}]
    )
    console.goto("/overview")
    assert "/console/sign-in" in console.page.url


def test_a_wrong_password_says_so_without_saying_which_part(console: Console) -> None:
    console.expect_status(401)
    console.sign_in("acme", "ana", "not the password")
    alert = console.page.get_by_role("alert")
    expect(alert).to_have_text("Sign-in failed: the account, user or password is wrong.")
    expect(console.page.get_by_label("Account")).to_have_value("acme")
    assert not any(c["name"] == "fluxo_session" for c in console.page.context.cookies())


def test_an_api_token_signs_in_as_its_user(console: Console, server: Server) -> None:
    token = server.token_for("globex", "gus")
    console.goto("/sign-in")
    console.page.get_by_text("Sign in with an API token").click()
    console.page.get_by_label("API token").fill(token)
    console.page.get_by_role("button", name="Sign in with token").click()
    expect(console.page).to_have_url(console.url("/overview"))
    expect(console.page.locator(".who")).to_contain_text("globex")
    # The cookie holds a session of its own, never the API token itself.
    values = [c["value"] for c in console.page.context.cookies()]
    assert token not in values


def test_a_wrong_token_is_refused(console: Console) -> None:
    console.expect_status(401)
    console.goto("/sign-in")
    console.page.get_by_text("Sign in with an API token").click()
    console.page.get_by_label("API token").fill("flx_not_a_token")
    console.page.get_by_role("button", name="Sign in with token").click()
    expect(console.page.get_by_role("alert")).to_contain_text("the token is wrong")


def test_switching_to_portuguese_translates_pages_and_formats(console: Console) -> None:
    console.sign_in()
    console.page.get_by_label("Language").select_option("pt_BR")
    expect(console.page.get_by_role("link", name="Visão geral")).to_be_visible()
    expect(console.page.locator("html")).to_have_attribute("lang", "pt-BR")
    console.goto("/overview")  # the choice is kept
    expect(console.page.get_by_role("button", name="Sair")).to_be_visible()
    console.page.get_by_label("Idioma").select_option("en")
    expect(console.page.get_by_role("button", name="Sign out")).to_be_visible()


def test_the_browser_language_is_the_default(browser: Browser, server: Server) -> None:
    context = browser.new_context(locale="pt-BR")
    try:
        page = context.new_page()
        page.goto(server.url + "/console/sign-in")
        expect(page.get_by_role("heading")).to_have_text("Entrar no Fluxo")
        page.screenshot(path=str(SCREENSHOTS / "sign-in.pt_BR.png"), full_page=True)
    finally:
        context.close()


def test_a_form_without_its_csrf_value_is_refused(console: Console, server: Server) -> None:
    console.sign_in()
    cookie = console.session_cookie()
    # The browser's own session, a forged form: no CSRF field, then a wrong one.
    for body in ("", "csrf=" + "0" * 64):
        status, text = server.post_form("/sign-out", body, cookie=cookie)
        assert status == 403
        assert "The form was refused" in text
    # The session survived both.
    console.goto("/overview")
    expect(console.page).to_have_url(console.url("/overview"))


def test_a_form_from_another_origin_is_refused(console: Console, server: Server) -> None:
    console.sign_in()
    csrf = console.page.locator("input[name=csrf]").first.get_attribute("value")
    status, _ = server.post_form(
        "/sign-out", f"csrf={csrf}", cookie=console.session_cookie(), origin="https://evil.example"
    )
    assert status == 403
    console.goto("/overview")
    expect(console.page).to_have_url(console.url("/overview"))


def test_an_unknown_console_page_is_the_consoles_404(console: Console) -> None:
    console.expect_status(404)
    console.sign_in()
    response = console.goto("/no/such/page")
    assert response.status == 404
    expect(console.page.get_by_role("heading")).to_have_text("Not found")
