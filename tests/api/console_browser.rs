//! The web console in a real headless Chromium: what an admin does with the
//! mouse and keyboard, on both databases, with an axe-core check of every
//! page on the way.

use std::time::Duration;

use fantoccini::key::Key;
use latchkey::grpc::pb;

use crate::helpers::*;
use crate::on_both_databases;

on_both_databases!(an_admin_manages_tokens_in_the_browser);

/// Asserts that axe-core finds no serious or critical violation on the
/// page the browser shows (`page` names it in the failure).
async fn accessible(browser: &Browser, page: &str) {
    if let Some(violations) = browser.accessibility_violations().await {
        assert!(violations.is_empty(), "{page}: {violations:#?}");
    }
}

/// The creation dialog.
const DIALOG: &str = "//*[self::dialog or @role='dialog']";

/// Copies the secret with the creation dialog's Copy button, and reads it
/// back from the clipboard.
async fn copy_secret(browser: &Browser) -> String {
    browser.grant("clipboard-read").await;
    browser.grant("clipboard-write").await;
    browser.click_in(DIALOG, "Copy").await;
    browser
        .find("//*[@role='status'][normalize-space(.)='Copied to the clipboard.']")
        .await;
    let copied = browser
        .run_async(
            "const done = arguments[arguments.length - 1];
             navigator.clipboard.readText().then(done, e => done('refused: ' + e));",
        )
        .await;
    copied.as_str().unwrap().to_owned()
}

/// Checks that `secret` verifies VALID with `scope`, as a token of
/// `owner` named `name` lasting `days`.
async fn verifies(
    app: &TestApp,
    secret: &str,
    scope: &str,
    (owner, name, days): (&str, &str, i64),
) {
    let verified = app.verify(secret, &[scope]).await;
    assert_eq!(verified.verdict(), pb::Verdict::Valid, "{secret:.8}…");
    let token = verified.token.unwrap();
    assert_eq!((token.owner.as_str(), token.name.as_str()), (owner, name));
    let lifetime = token.expire_time.unwrap().seconds - token.create_time.unwrap().seconds;
    assert_eq!(lifetime, days * 86_400);
}

/// The cell of `column` in the token table's row named `name`.
fn cell(name: &str, column: &str) -> String {
    format!(
        "//tr[td[1][normalize-space(.)='{name}']]/td[count(//thead/tr/th[normalize-space(.)='{column}']/preceding-sibling::th) + 1]"
    )
}

fn row(name: &str) -> String {
    format!("//tr[td[1][normalize-space(.)='{name}']]")
}

async fn an_admin_manages_tokens_in_the_browser(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap())
    })
    .await;
    let base = format!("http://{}", app.http_addr.unwrap());
    // A name that would run as script if the page did not escape it.
    let hostile = app
        .create(pb::CreateTokenRequest {
            owner: "user-7".into(),
            name: "<script>document.title=\"owned\"</script>".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .secret
        .clone();

    // Signing in.
    browser.goto(&format!("{base}/console/")).await;
    assert_eq!(browser.path().await, "/console/login");
    accessible(&browser, "sign-in").await;
    browser.fill("Admin credential", "not-the-credential").await;
    browser.click("Sign in").await;
    let said = browser
        .find("//*[@role='alert']")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(said, "That is not a valid admin credential.");
    // With the keyboard alone: the credential, Enter; Tab to New token.
    browser.fill("Admin credential", ADMIN_TOKEN).await;
    browser.press(Key::Enter).await;
    browser.until_heading("Tokens").await;
    accessible(&browser, "token list").await;
    let title = browser.client.title().await.unwrap();
    assert_eq!(title, "Tokens · latchkey");
    assert!(
        browser
            .text()
            .await
            .contains("<script>document.title=\"owned\"</script>")
    );

    // A new token from a preset; its secret, copied from the dialog,
    // verifies.
    browser.tab_to("New token").await;
    browser.press(Key::Enter).await;
    browser.until_heading("New token").await;
    accessible(&browser, "new token").await;
    browser.screenshot("new-token").await;
    browser.fill("Owner", "user-7").await;
    browser.fill("Name", "CI deploy").await;
    browser
        .find("//label[normalize-space(.)='90 days']")
        .await
        .click()
        .await
        .unwrap();
    browser
        .fill(
            "Scopes (optional, separated by spaces)",
            "repo:read repo:write",
        )
        .await;
    browser.click("Create token").await;
    browser
        .until(&format!("{DIALOG}//h1"), "Token created")
        .await;
    assert!(
        browser
            .text()
            .await
            .contains("Copy the token now. It will not be shown again.")
    );
    accessible(&browser, "creation dialog").await;
    let secret = copy_secret(&browser).await;
    verifies(&app, &secret, "repo:read", ("user-7", "CI deploy", 90)).await;

    // The list: "Never" until the token is used, then the time of its use.
    browser.goto(&format!("{base}/console/?owner=user-7")).await;
    let hint = browser
        .find(&cell("CI deploy", "Token"))
        .await
        .text()
        .await
        .unwrap();
    // A partial view: the prefix and the last four characters.
    assert_eq!(hint, format!("lk_…{}", &secret[secret.len() - 4..]));
    // Used above: the use is written behind, within the flush interval.
    let mut last_used = String::new();
    for _ in 0..100 {
        browser.client.refresh().await.unwrap();
        last_used = browser
            .find(&cell("CI deploy", "Last used"))
            .await
            .text()
            .await
            .unwrap();
        if last_used != "Never" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last_used.ends_with(" UTC"), "{last_used}");
    browser.screenshot("tokens").await;
    let unused = browser
        .find(&cell(
            "<script>document.title=\"owned\"</script>",
            "Last used",
        ))
        .await;
    assert_eq!(unused.text().await.unwrap(), "Never");

    // Revoke, restore, then delete after a confirmation.
    browser.click_in(&row("CI deploy"), "Revoke").await;
    browser.until(&cell("CI deploy", "Status"), "revoked").await;
    assert_eq!(browser.path().await, "/console/?owner=user-7");
    assert_eq!(
        app.verify(&secret, &[]).await.verdict(),
        pb::Verdict::Revoked
    );
    browser.click_in(&row("CI deploy"), "Restore").await;
    browser.until(&cell("CI deploy", "Status"), "active").await;
    assert_eq!(app.verify(&secret, &[]).await.verdict(), pb::Verdict::Valid);

    browser
        .find("//a[normalize-space(.)='CI deploy']")
        .await
        .click()
        .await
        .unwrap();
    browser.until_heading("CI deploy").await;
    browser.find("//td[normalize-space(.)='RESTORED']").await;
    accessible(&browser, "token page").await;
    browser.screenshot("token").await;
    browser.client.back().await.unwrap();
    browser.until_heading("Tokens").await;

    browser.click_in(&row("CI deploy"), "Delete").await;
    browser.until_heading("Delete the token “CI deploy”?").await;
    accessible(&browser, "delete confirmation").await;
    // Cancelling deletes nothing.
    browser
        .find("//a[normalize-space(.)='Cancel']")
        .await
        .click()
        .await
        .unwrap();
    browser.until_heading("Tokens").await;
    browser.find(&row("CI deploy")).await;
    browser.click_in(&row("CI deploy"), "Delete").await;
    browser.until_heading("Delete the token “CI deploy”?").await;
    browser.click("Delete").await;
    browser.until_heading("Tokens").await;
    assert_eq!(browser.path().await, "/console/?owner=user-7");
    assert!(!browser.text().await.contains("CI deploy"));
    assert_eq!(
        app.verify(&secret, &[]).await.verdict(),
        pb::Verdict::Unknown
    );

    // The owner: disabled with a reason, enabled, all its tokens deleted
    // after a confirmation; each in its audit trail.
    browser
        .find("//nav//a[normalize-space(.)='Owners']")
        .await
        .click()
        .await
        .unwrap();
    browser.until_heading("Owners").await;
    accessible(&browser, "owner search").await;
    browser.fill("Owner", "user-7").await;
    browser.click("Look up").await;
    browser.until_heading("Owner user-7").await;
    browser.fill("Reason", "left the company").await;
    browser.click("Disable").await;
    browser
        .find("//dd[contains(., 'disabled since') and contains(., '(left the company)')]")
        .await;
    assert_eq!(
        app.verify(&hostile, &[]).await.verdict(),
        pb::Verdict::OwnerDisabled
    );
    accessible(&browser, "owner page").await;
    browser.screenshot("owner").await;
    browser.click("Enable").await;
    browser.find("//dd[normalize-space(.)='enabled']").await;
    assert_eq!(
        app.verify(&hostile, &[]).await.verdict(),
        pb::Verdict::Valid
    );
    browser.click("Delete all tokens").await;
    browser.until_heading("Delete all tokens of user-7?").await;
    accessible(&browser, "owner delete confirmation").await;
    browser.click("Delete all tokens").await;
    browser.until_heading("Owner user-7").await;
    browser
        .find("//dd[normalize-space(.)='0 active, 0 revoked, 0 expired, 0 inactive']")
        .await;
    assert_eq!(
        app.verify(&hostile, &[]).await.verdict(),
        pb::Verdict::Unknown
    );
    let trail = browser.text().await;
    for kind in ["OWNER_DISABLED", "OWNER_ENABLED", "DELETED"] {
        assert!(trail.contains(kind), "{kind}: {trail}");
    }

    // The keys, with the tokens under each.
    browser
        .find("//nav//a[normalize-space(.)='Keys']")
        .await
        .click()
        .await
        .unwrap();
    browser.until_heading("Keys").await;
    accessible(&browser, "keys").await;
    browser.find("//td[normalize-space(.)='primary']").await;

    // On a phone's width, and in dark mode, the pages still fit and pass
    // the check (colour contrast included), with a few tokens listed.
    for (name, scopes) in [
        ("deploy bot", vec!["deploy:*".to_owned()]),
        ("laptop", vec![]),
    ] {
        let made = app
            .create(pb::CreateTokenRequest {
                owner: "user-7".into(),
                name: name.into(),
                scopes,
                ..Default::default()
            })
            .await
            .unwrap();
        app.verify(&made.secret, &[]).await;
    }
    browser.viewport_width(320).await;
    for path in ["/console/?owner=user-7", "/console/tokens/new"] {
        browser.goto(&format!("{base}{path}")).await;
        assert!(
            !browser.overflows().await,
            "{path} scrolls sideways at 320 px"
        );
    }
    browser.viewport_width(1280).await;
    browser.prefer_dark(true).await;
    for (path, name) in [
        ("/console/?owner=user-7", "tokens"),
        ("/console/tokens/new?owner=user-7", "new-token"),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        assert_eq!(browser.background().await, "rgb(13, 17, 23)", "{path}");
        accessible(&browser, &format!("{path}, dark")).await;
        browser.screenshot(&format!("{name}-dark")).await;
    }
    browser.goto(&format!("{base}/console/?owner=user-7")).await;

    // Nothing ran the hostile name as script.
    assert_eq!(browser.client.title().await.unwrap(), "Tokens · latchkey");
    browser.close().await;
}

on_both_databases!(a_products_user_manages_their_tokens_on_the_hosted_page);

/// What a product's user does on the hosted token page, sent there by the
/// product with a console link.
async fn a_products_user_manages_their_tokens_on_the_hosted_page(backend: Backend) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let app = spawn_app_with(backend, |s| {
        s.http_addr = Some("127.0.0.1:0".parse().unwrap());
        s.console.scopes = vec![latchkey::config::ConsoleScope {
            name: "repo:read".into(),
            description: "Read your repositories".into(),
        }];
    })
    .await;
    let (others, _) = app.create_token("user-10", &[]).await;
    let link = crate::console_hosted::console_link(
        &app,
        "user-9",
        None,
        "https://app.example.com/settings",
    )
    .await
    .unwrap();

    // The link leads to the page, which shows the owner's tokens only.
    browser.goto(&link.url).await;
    browser.until_heading("Your tokens").await;
    assert_eq!(browser.path().await, "/console/mine/");
    accessible(&browser, "hosted list").await;
    let back = browser
        .find("//a[normalize-space(.)='Back to app.example.com']")
        .await;
    assert_eq!(
        back.attr("href").await.unwrap().as_deref(),
        Some("https://app.example.com/settings")
    );
    assert!(!browser.text().await.contains(&others.display_hint));

    // A new token from a preset with an offered scope.
    browser.click("New token").await;
    browser.until_heading("New token").await;
    accessible(&browser, "hosted new token").await;
    browser.screenshot("hosted-new-token").await;
    browser.fill("Name", "laptop").await;
    browser
        .find("//label[normalize-space(.)='1 year']")
        .await
        .click()
        .await
        .unwrap();
    browser
        .find("//label[contains(., 'Read your repositories')]")
        .await
        .click()
        .await
        .unwrap();
    browser.click("Create token").await;
    browser
        .until(&format!("{DIALOG}//h1"), "Token created")
        .await;
    let secret = copy_secret(&browser).await;
    verifies(&app, &secret, "repo:read", ("user-9", "laptop", 365)).await;

    // Revoke, restore, delete with a confirmation, all on the list.
    browser
        .find(&format!("{DIALOG}//a[normalize-space(.)='Done']"))
        .await
        .click()
        .await
        .unwrap();
    browser.until_heading("Your tokens").await;
    browser.screenshot("hosted-tokens").await;
    browser.click_in(&row("laptop"), "Revoke").await;
    browser.until(&cell("laptop", "Status"), "revoked").await;
    assert_eq!(
        app.verify(&secret, &[]).await.verdict(),
        pb::Verdict::Revoked
    );
    browser.click_in(&row("laptop"), "Restore").await;
    browser.until(&cell("laptop", "Status"), "active").await;
    browser.click_in(&row("laptop"), "Delete").await;
    browser.until_heading("Delete the token “laptop”?").await;
    accessible(&browser, "hosted delete confirmation").await;
    browser.click("Delete").await;
    browser.until_heading("Your tokens").await;
    assert!(!browser.text().await.contains("laptop"));
    assert_eq!(
        app.verify(&secret, &[]).await.verdict(),
        pb::Verdict::Unknown
    );

    // The link opened once; opened again, it is refused.
    browser.goto(&link.url).await;
    browser
        .until(
            "//*[@role='alert']",
            "This link has expired or was already used. Go back and open your tokens page again.",
        )
        .await;
    browser.close().await;
}
