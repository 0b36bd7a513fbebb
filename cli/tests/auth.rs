//! `tinkex auth login|logout|status|whoami` against an in-process emulator: the credentials
//! file (~/.tinker/credentials.json, modes 0700/0600, shared with the official CLI), the key
//! checked with `auth/apikey/me` and never printed, commands running on the stored key,
//! logout of a pasted and of a generated key, and whoami in both auth modes.

mod support;

use serde_json::{json, Value};
use support::*;

fn stored(cli: &Cli) -> Value {
    let text = std::fs::read_to_string(cli.home.join(".tinker/credentials.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_stores_the_key_and_logout_removes_it() {
    let emu = emulator_with("auth", |_| {}).await;
    let mut cli = Cli::new(&emu, "auth");
    cli.api_key = None;
    let key = "tml-login-secret-1234";

    // Nothing stored yet: no credential.
    cli.run(&["run", "list"]).await.expect(EXIT_USER);
    let r = cli.run(&["auth", "logout"]).await;
    assert!(
        r.expect(EXIT_USER)
            .stderr
            .contains("No default credential is stored"),
        "{r:#?}"
    );

    // An empty answer and a key of the wrong form are refused before any request.
    cli.run_with_stdin(&["auth", "login"], "\n")
        .await
        .expect(EXIT_USER);
    let r = cli.run_with_stdin(&["auth", "login"], "sk-wrong\n").await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("'tml-' prefix"),
        "{r:#?}"
    );
    // A key the server rejects (401) is not stored.
    emu.state().auth.delete_key("tml-revoked");
    let r = cli
        .run_with_stdin(&["auth", "login"], "tml-revoked\n")
        .await;
    assert!(
        r.expect(EXIT_USER)
            .stderr
            .contains("Could not validate the API key"),
        "{r:#?}"
    );
    assert!(!cli.home.join(".tinker/credentials.json").exists());

    let r = cli
        .run_with_stdin(&["auth", "login"], &format!("{key}\n"))
        .await;
    r.expect(0);
    assert!(r.stdout.starts_with("Logged in as "), "{r:#?}");
    assert!(r.stderr.contains("Create an API Key: https://"), "{r:#?}");
    assert!(
        !r.stdout.contains(key) && !r.stderr.contains(key),
        "never print the key"
    );
    let file = stored(&cli);
    let id = file["default"].as_str().unwrap().to_string();
    assert_eq!(file["version"], json!(1));
    assert_eq!(file["keys"][&id]["type"], json!("manual"));
    assert_eq!(file["keys"][&id]["key"], json!(key));
    assert_eq!(file["keys"][&id]["name"], json!("tinkex-emulator-key"));
    assert!(file["keys"][&id]["details"]["org_details"]["name"].is_string());
    #[cfg(unix)]
    {
        assert_eq!(mode(&cli.home.join(".tinker")), 0o700);
        assert_eq!(mode(&cli.home.join(".tinker/credentials.json")), 0o600);
    }

    // Logged in: a second login is refused; commands use the stored key.
    let r = cli
        .run_with_stdin(&["auth", "login"], &format!("{key}\n"))
        .await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("Already logged in"),
        "{r:#?}"
    );
    cli.run(&["run", "list"]).await.expect(0);
    let r = cli.run(&["auth", "status"]).await;
    assert_eq!(
        r.expect(0).stdout,
        "Credentials available: yes\nTinker accessible: yes\n"
    );

    // Logout of a pasted key: removed locally, still active on the server.
    let r = cli.run(&["-f", "json", "auth", "logout"]).await;
    let v = r.expect(0).json();
    assert_eq!(v["deleted_on_server"], json!(false));
    assert_eq!(v["key_id"], json!(id));
    assert!(stored(&cli)["keys"].as_object().unwrap().is_empty());
    assert!(stored(&cli)["default"].is_null());
    assert!(!emu.state().auth.key_deleted(key));
    cli.run(&["run", "list"]).await.expect(EXIT_USER);

    // JSON login, then logout of a key minted for an old CLI ("generated"): deleted on the
    // server too.
    let r = cli
        .run_with_stdin(&["-f", "json", "auth", "login"], &format!("{key}\n"))
        .await;
    let v = r.expect(0).json();
    assert_eq!(v["key_id"], json!(id));
    assert!(!r.stdout.contains(key));
    let mut file = stored(&cli);
    file["keys"][&id]["type"] = json!("generated");
    file["keys"][&id].as_object_mut().unwrap().remove("note");
    std::fs::write(
        cli.home.join(".tinker/credentials.json"),
        serde_json::to_string_pretty(&file).unwrap(),
    )
    .unwrap();
    let r = cli.run(&["auth", "logout"]).await;
    assert!(
        r.expect(0)
            .stdout
            .contains("and deleted its API key on the server"),
        "{r:#?}"
    );
    assert!(emu.state().auth.key_deleted(key));
    assert_eq!(
        requests(&emu, "/api/v1/create_session"),
        0,
        "auth commands create no session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_in_jwt_mode_and_with_a_plain_key() {
    let plain = emulator_with("whoami-plain", |_| {}).await;
    let cli = Cli::new(&plain, "whoami-plain");
    let r = cli.run(&["auth", "whoami"]).await;
    assert!(
        r.expect(EXIT_USER).stderr.contains("requires JWT auth"),
        "{r:#?}"
    );

    let emu = emulator_with("whoami-jwt", |c| {
        c.client_config
            .insert("pjwt_auth_enabled".into(), json!(true));
    })
    .await;
    let cli = Cli::new(&emu, "whoami-jwt");
    let r = cli.run(&["-f", "json", "auth", "whoami"]).await;
    let me = r.expect(0).json();
    assert!(
        me["user_urn"]
            .as_str()
            .unwrap()
            .starts_with("tml:organization_user:"),
        "{me}"
    );
    assert!(me["org_urn"]
        .as_str()
        .unwrap()
        .starts_with("tml:organization:"));
    let r = cli.run(&["auth", "whoami"]).await;
    for label in ["Email", "User", "Organization"] {
        assert!(r.expect(0).stdout.contains(label), "{r:#?}");
    }
    assert!(r.stdout.contains(me["org_urn"].as_str().unwrap()), "{r:#?}");
    // The model filter names the organisation when the identity is known.
    let r = cli.run(&["model", "list", "no-such-model"]).await;
    assert!(
        r.expect(EXIT_USER).stderr.contains(&format!(
            "for organization {}",
            me["org_urn"].as_str().unwrap()
        )),
        "{r:#?}"
    );
    assert_eq!(requests(&emu, "/api/v1/create_session"), 0);
    assert!(
        requests(&emu, "/api/v1/auth/token") > 0,
        "JWT mode was used"
    );
}
