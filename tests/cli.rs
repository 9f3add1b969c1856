//! The built binary: `check` with located errors, and SIGTERM draining in-flight requests.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn check(dir: &Path, toml: &str) -> (bool, String) {
    let path = dir.join("authgate.toml");
    std::fs::write(&path, toml).unwrap();
    let output = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

const VALID_HEAD: &str = "[[listener]]\naddress = \"127.0.0.1:0\"\n";

#[test]
fn check_reports_file_line_column_and_reason() {
    let dir = temp_dir("check");
    let file = dir.join("authgate.toml");
    let file = file.display();
    // (config body after the listener lines, expected "line:column", expected message part)
    let cases: &[(&str, &str, &str)] = &[
        ("[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"http://127.0.0.1:1\"\nbogus = 1\n", "7:1", "unknown field `bogus`"),
        ("[server]\nidle_timeout = \"10 parsecs\"\n", "4:16", "duration"),
        ("[server]\nidle_timeout = \"30\"\n", "4:16", "has no unit"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"ftp://x\"\n", "6:12", "must use http or https"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"not a url\"\n", "6:12", "is not a URL"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"api\"\nupstream = \"http://x\"\n", "5:15", "must begin with \"/\""),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/a/../b\"\nupstream = \"http://x\"\n", "5:15", "write \"/b\""),
        ("[[route]]\nname = \"a\"\nhost = \"http://x\"\npath_prefix = \"/\"\nupstream = \"http://x\"\n", "5:8", "not a valid host name"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/\"\nmethods = [\"get\"]\nupstream = \"http://x\"\n", "6:11", "upper-case HTTP method"),
        ("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "4:19", "not a CIDR range"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"${AUTHGATE_SURELY_UNSET_VAR}\"\n", "6:12", "AUTHGATE_SURELY_UNSET_VAR is not set"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/x\"\nupstream = \"http://x\"\n[[route]]\nname = \"a\"\npath_prefix = \"/y\"\nupstream = \"http://x\"\n", "8:8", "route name \"a\" is used twice"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/x\"\nupstream = \"http://x\"\n[[route]]\nname = \"b\"\npath_prefix = \"/x/\"\nupstream = \"http://x\"\n", "7:1", "matches the same host, path_prefix and methods"),
        ("[upstream]\nca_bundle = \"missing-ca.pem\"\n", "4:13", "cannot read"),
        ("[server]\nmax_connections = \"many\"\n", "4:19", "invalid type"),
        ("[server\n", "3:8", ""),
        ("[server]\nidle_timeout = \"0s\"\n", "4:16", "must be longer than zero"),
        ("[server]\nmax_header_bytes = 1024\n", "4:20", "at least 8192"),
        ("[server]\nmax_connections = 0\n", "4:19", "at least 1"),
        ("[[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"http://x\"\nresponse_timeout = \"0ms\"\n", "7:20", "must be longer than zero"),
        ("[upstream]\nca_bundle = \"authgate.toml\"\n", "4:13", "no usable certificate"),
    ];
    for (body, position, message) in cases {
        let (ok, output) = check(&dir, &format!("{VALID_HEAD}{body}"));
        assert!(!ok, "accepted:\n{body}");
        let expected = format!("{file}:{position}: ");
        assert!(
            output.contains(&expected),
            "want {expected}{message:?}, got:\n{output}\nfor:\n{body}"
        );
        assert!(output.contains(message), "want {message:?}, got:\n{output}");
    }
}

#[test]
fn check_lists_every_semantic_error_and_unreadable_tls_files() {
    let dir = temp_dir("check-many");
    let toml = format!(
        "{VALID_HEAD}[[listener]]\naddress = \"127.0.0.1:0\"\ntls = {{ cert = \"nope.pem\", key = \"nope-key.pem\" }}\n\
         [[route]]\nname = \"a\"\npath_prefix = \"/\"\nupstream = \"http://x\"\n\
         [[route]]\nname = \"a\"\npath_prefix = \"/z\"\nupstream = \"http://x\"\n"
    );
    let (ok, output) = check(&dir, &toml);
    assert!(!ok);
    assert!(output.contains(":5:16: cannot read"), "{output}");
    assert!(output.contains("nope.pem"), "{output}");
    assert!(
        output.contains("route name \"a\" is used twice"),
        "{output}"
    );
    assert!(
        output.contains(":6:1: route \"a\" requires authentication but no provider can serve it"),
        "{output}"
    );
    assert!(output.contains("4 error(s)"), "{output}");

    // A certificate file that is not PEM is refused at the cert value.
    std::fs::write(dir.join("garbage.pem"), "not a certificate").unwrap();
    let toml = "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = { cert = \"garbage.pem\", key = \"garbage.pem\" }\n";
    let (ok, output) = check(&dir, toml);
    assert!(!ok);
    assert!(output.contains(":3:16: "), "{output}");
}

#[test]
fn check_accepts_the_shipped_example_and_a_tls_config() {
    let (ok, output) = {
        let output = Command::new(BIN)
            .args(["check", "--config", "config/authgate.toml"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    assert!(ok, "{output}");
    let dir = temp_dir("check-tls");
    make_cert(&dir);
    let (ok, output) = check(
        &dir,
        "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = { cert = \"cert.pem\", key = \"key.pem\" }\n",
    );
    assert!(ok, "{output}");
    assert!(
        output.contains("ok (1 listener(s), 0 route(s))"),
        "{output}"
    );
}

/// Messages a first-time user met and could not act on, each pinned to its exact line: location
/// and whole message.
#[test]
fn check_messages_say_what_to_write() {
    let dir = temp_dir("check-wording");
    let file = dir.join("authgate.toml");
    let file = file.display();
    let provider = "[[provider]]\nname = \"corp\"\nissuer = \"https://idp.example\"\naudiences = [\"api\"]\nalgorithms = [\"RS256\"]\n";
    let route = "[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\n";
    // (config after the listener lines, every error line expected after "file:")
    let cases: Vec<(String, Vec<&str>)> = vec![
        // A route naming a provider that is in the file but failed to build: only the
        // provider's own error, no "no provider is named" and no "no provider can serve it".
        (
            format!("{provider}jwks_uri = \"https://idp.example/jwks\"\nsecret = \"x\"\n{route}providers = [\"corp\"]\n"),
            vec!["3:1: provider \"corp\" needs exactly one of jwks_uri, discovery = true, or secret"],
        ),
        (
            format!("{provider}{route}"),
            vec!["3:1: provider \"corp\" needs exactly one of jwks_uri, discovery = true, or secret"],
        ),
        // A provider that is not in the file at all is still named.
        (
            format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n{route}providers = [\"crop\"]\n"),
            vec!["13:13: route \"r\": no provider is named \"crop\""],
        ),
        (
            "[server]\nmax_connections = \"many\"\n".into(),
            vec!["4:19: invalid type: string \"many\", expected a non-negative integer"],
        ),
        (
            "[server]\nmax_connections = -1\n".into(),
            vec!["4:19: invalid value: integer `-1`, expected a non-negative integer"],
        ),
        (
            "[server]\nh2_max_concurrent_streams = 99999999999\n".into(),
            vec!["4:29: invalid value: integer `99999999999`, expected a non-negative integer no larger than 4294967295"],
        ),
        (
            "[upstream]\nmax_idle_per_host = 1.5\n".into(),
            vec!["4:21: invalid type: floating point `1.5`, expected a non-negative integer"],
        ),
        (
            "[server]\nidle_timeout = \"1m30s\"\n".into(),
            vec!["4:16: duration \"1m30s\" combines units, which is not accepted; write a single unit, e.g. \"90s\" (expected a duration longer than zero such as \"500ms\" or \"30s\")"],
        ),
        (
            format!("{route}path_prefx = \"/a\"\n"),
            vec!["7:1: unknown field `path_prefx`, did you mean `path_prefix`?"],
        ),
        (
            "[authn]\nrealm = \"x\"\n".into(),
            vec!["3:2: unknown field `authn`, did you mean `auth`?"],
        ),
        (
            format!("{route}bogus = 1\n"),
            vec!["7:1: unknown field `bogus`; no key here is spelled like it (see config/README.md for the keys of this table)"],
        ),
        (
            format!("{route}auth = \"Public\"\n"),
            vec!["7:8: unknown variant `Public`, did you mean `public`?"],
        ),
    ];
    for (body, expected) in &cases {
        let text = format!("{VALID_HEAD}{body}");
        let (ok, output) = check(&dir, &text);
        assert!(!ok, "accepted:\n{text}");
        let mut want: Vec<String> = expected.iter().map(|e| format!("{file}:{e}")).collect();
        want.push(format!("{file}: {} error(s)", expected.len()));
        let got: Vec<&str> = output.lines().collect();
        assert_eq!(got, want, "for:\n{text}");
    }

    // A key from another pair: both files named, no rustls debug text.
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    make_cert(&a);
    make_cert(&b);
    let (ok, output) = check(
        &dir,
        "[[listener]]\naddress = \"127.0.0.1:0\"\ntls = { cert = \"a/cert.pem\", key = \"b/key.pem\" }\n",
    );
    assert!(!ok);
    assert_eq!(
        output.lines().next().unwrap_or_default(),
        format!(
            "{file}:3:16: the private key in {} does not match the certificate in {} (the first certificate in the file must be the key's own)",
            b.join("key.pem").display(),
            a.join("cert.pem").display()
        ),
        "{output}"
    );
    assert!(!output.contains("KeyMismatch"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_serving_during_the_delay_then_drains_and_exits_zero() {
    let up = echo().await;
    let dir = temp_dir("sigterm");
    let config = dir.join("authgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nshutdown_delay = \"1s\"\ndrain_timeout = \"20s\"\n{VALID_HEAD}\
             [[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"
        ),
    )
    .unwrap();
    let (mut child, addr) = spawn_gateway(&config);
    let client = h1_client();
    // Several slow requests in flight when the signal arrives.
    let in_flight: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                send(
                    &client,
                    get(&format!("http://{addr}/slow/{i}?delay_ms=2500")),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "TERM");
    // During the shutdown delay new requests are still served.
    let during = send(&h1_client(), get(&format!("http://{addr}/during"))).await;
    assert_eq!(during.status, 200);
    for request in in_flight {
        assert_eq!(request.await.unwrap().status, 200);
    }
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("gateway did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_stops_run_with_the_located_error() {
    let dir = temp_dir("run-bad");
    let config = dir.join("authgate.toml");
    std::fs::write(
        &config,
        format!("{VALID_HEAD}[server]\nidle_timeout = \"soon\"\n"),
    )
    .unwrap();
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:4:16: ", config.display())),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_its_printed_tokens_as_documented() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((name, value)) = line.trim().split_once('=') {
                if ["VALID", "EXPIRED", "REVOKED", "UNSCOPED", "ADMIN"].contains(&name) {
                    let _ = tx.send((name.to_string(), value.to_string()));
                }
            }
        }
    });
    let mut tokens = std::collections::HashMap::new();
    while tokens.len() < 5 {
        let (name, value) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("demo did not print its tokens");
        tokens.insert(name, value);
    }
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually_async(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "demo never listened");
    let client = h1_client();
    let reply = send(
        &client,
        bearer(&format!("{base}/echo/hello"), &tokens["VALID"]),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.upstream_header("x-auth-subject"), vec!["alice"]);
    let reply = send(&client, get(&format!("{base}/echo/hello"))).await;
    assert_eq!(
        (reply.status, reply.reason().as_str()),
        (401, "missing_credential")
    );
    for (name, path, status, reason) in [
        ("EXPIRED", "/echo/x", 401, "token_expired"),
        ("REVOKED", "/echo/x", 401, "revoked_token"),
        ("UNSCOPED", "/orders/1", 403, "insufficient_scope"),
    ] {
        let reply = send(&client, bearer(&format!("{base}{path}"), &tokens[name])).await;
        assert_eq!(
            (reply.status, reply.reason().as_str()),
            (status, reason),
            "{name}"
        );
    }
    // The printed admin URL serves readiness (the demo issuer's keys are fetched) and metrics
    // that counted the refusals above by reason.
    let admin = &tokens["ADMIN"];
    assert!(
        eventually_async(Duration::from_secs(20), || async {
            send(&client, get(&format!("{admin}/readyz"))).await.status == 200
        })
        .await
    );
    let metrics = send(&client, get(&format!("{admin}/metrics"))).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains(
            "authgate_auth_decisions_total{provider=\"demo\",reason=\"revoked_token\",result=\"denied\"} 1"
        ),
        "{text}"
    );
    signal(&child, "TERM");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("demo did not exit on SIGTERM");
    assert!(status.success());
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn check_locates_auth_config_errors() {
    let dir = temp_dir("check-auth");
    let file = dir.join("authgate.toml");
    let provider = "[[provider]]\nname = \"p\"\nissuer = \"https://idp.example\"\naudiences = [\"api\"]\nalgorithms = [\"RS256\"]\n";
    // (config after the listener, the text on the offending line, expected message part)
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("{provider}jwks_uri = \"http://idp.example/jwks\"\n"), "jwks_uri", "plain http"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\nsecret = \"x\"\n"), "[[provider]]", "exactly one of jwks_uri, discovery = true, or secret"),
        ("[[provider]]\nname = \"h\"\nissuer = \"i\"\naudiences = [\"api\"]\nalgorithms = [\"HS256\"]\nsecret = \"too-short\"\n".into(), "secret", "at least 32 bytes"),
        ("[[provider]]\nname = \"h\"\nissuer = \"i\"\naudiences = [\"api\"]\nalgorithms = [\"none\"]\nsecret = \"x\"\n".into(), "algorithms", "not a supported algorithm"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\naudiences_typo = 1\n"), "audiences_typo", "unknown field"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\nproviders = [\"nope\"]\n"), "providers = ", "no provider is named \"nope\""),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\nauth = \"public\"\n[route.policy]\nscopes_all = [\"a\"]\n"), "[[route]]", "is public"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\n[route.policy]\nroles_claim = \"roles\"\nroles_any = [\"a\"]\n"), "roles_claim", "JSON Pointer"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\nauth = \"sometimes\"\n"), "auth = ", "unknown variant"),
        ("[auth.identity]\nprefix = \"\"\n".into(), "prefix", "prefix"),
        ("[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\nauth = \"public\"\npublic_origin = \"https://app.example.com/path\"\n".into(), "public_origin", "may not have a path"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\npublic_origin = \"https://a.example\"\nlogin_url = \"https://login.example/#frag\"\n"), "login_url", "absolute http(s) URL"),
        ("[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"https://x\"\nauth = \"public\"\nupstream_protocol = \"h2\"\npreserve_host = true\n".into(), "[[route]]", "preserve_host works with"),
        ("[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"https://x\"\nauth = \"public\"\nupstream_protocol = \"h2c\"\n".into(), "[[route]]", "needs an http:// upstream"),
        ("[auth]\nsession_cookie = \"bad cookie\"\n".into(), "session_cookie", "not a valid cookie name"),
        ("[auth]\nmax_token_bytes = 100\n".into(), "max_token_bytes", "at least 256"),
        ("[auth]\nrealm = \"a\\\"b\"\n".into(), "realm", "auth.realm may not"),
        ("[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\nauth = \"public\"\nallowed_origins = []\n".into(), "[[route]]", "allowed_origins is empty"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\npublic_origin = \"https://a.example\"\nlogin_url = \"https://login.example/\"\nlogin_redirect_param = \"r d\"\n"), "[[route]]", "login_redirect_param"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\n[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://x\"\nlogin_url = \"https://login.example/\"\n"), "[[route]]", "login_url needs public_origin"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\njwks_max_bytes = 10\n"), "[[provider]]", "jwks_max_bytes must be at least 1024"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\njwks_min_refresh_interval = \"2h\"\njwks_max_refresh_interval = \"1h\"\n"), "[[provider]]", "longer than jwks_max_refresh_interval"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\njwks_unknown_kid_interval = \"10ms\"\n"), "[[provider]]", "below 100ms"),
        (format!("{provider}jwks_uri = \"https://idp.example/jwks\"\njwks_fetch_timeout = \"99999999h\"\n"), "jwks_fetch_timeout", "longer than 365 days"),
        ("[[provider]]\nname = \"h\"\nissuer = \"i\"\naudiences = [\"api\"]\nalgorithms = [\"HS256\"]\nsecret = \"0123456789abcdef0123456789abcdef\"\njwks_max_staleness = \"1h\"\n".into(), "[[provider]]", "do not apply"),
    ];
    for (body, marker, message) in &cases {
        let text = format!("{VALID_HEAD}{body}");
        let (ok, output) = check(&dir, &text);
        assert!(!ok, "accepted:\n{text}");
        let expected = format!("{}:{}:", file.display(), line_of(&text, marker));
        assert!(
            output.contains(&expected),
            "want {expected} {message:?}, got:\n{output}\nfor:\n{text}"
        );
        assert!(output.contains(message), "want {message:?}, got:\n{output}");
    }

    // A bad denylist file is reported with its own file, line and column.
    std::fs::write(
        dir.join("deny.toml"),
        "[[token]]\nissuer = \"i\"\njti = \"\"\n",
    )
    .unwrap();
    let text = format!("{VALID_HEAD}[auth]\ndenylist = \"deny.toml\"\n");
    let (ok, output) = check(&dir, &text);
    assert!(!ok);
    assert!(
        output.contains(&format!("{}:3:", dir.join("deny.toml").display())),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_survives_running_out_of_file_descriptors() {
    let up = echo().await;
    let dir = temp_dir("emfile");
    let config = dir.join("authgate.toml");
    std::fs::write(
        &config,
        format!(
            "{VALID_HEAD}[[route]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"http://{up}\"\nauth = \"public\"\n"
        ),
    )
    .unwrap();
    // A descriptor limit so low that a burst of connections exhausts it.
    let mut wrapper = Command::new("prlimit");
    wrapper.args(["--nofile=48:48", "--", BIN]);
    let (mut child, addr, logs) = spawn_gateway_with(wrapper, &config);
    let mut held = Vec::new();
    for _ in 0..120 {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            held.push(stream);
        }
    }
    let saw_accept_error = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match logs.recv_timeout(left) {
                Ok(event) if event["message"] == "accept failed; retrying" => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(
        saw_accept_error,
        "the descriptor limit was never hit; the test proves nothing"
    );
    drop(held);
    // Once descriptors are free again, the same listener serves.
    let served = eventually_async(Duration::from_secs(30), || async {
        let request = h1_client().request(get(&format!("http://{addr}/after")));
        matches!(tokio::time::timeout(Duration::from_secs(5), request).await, Ok(Ok(r)) if r.status() == 200)
    })
    .await;
    assert!(served, "the gateway stopped serving after accept errors");
    signal(&child, "TERM");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("gateway did not exit");
    assert!(status.success());
}
