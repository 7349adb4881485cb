//! The REST API: every endpoint and every failure row, percent-encoded names,
//! idempotency keys, problem+json errors, and REST and gRPC agreeing on the same
//! locks.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use globallock_proto::v1::{DescribeRequest, ReleaseRequest};
use harness::http::encode_segment;
use harness::{Cluster, ClusterOptions, acquire};
use serde_json::json;

fn assert_problem(response: &harness::http::HttpResponse, status: u16) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{response:?}"
    );
    let body = response.json();
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:globallock:problem:"),
        "{body}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_life_cycle_over_rest() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let rest = cluster.rest_addrs[0];

    let created = cluster
        .send_json(
            rest,
            "POST",
            "/locks",
            &json!({"resource": "orders/42", "owner": "alice", "ttl_ms": 10_000}),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let lock = created.json();
    let lock_id = lock["lock_id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/locks/{lock_id}").as_str())
    );
    assert_eq!(lock["resource"], "orders/42");
    assert_eq!(lock["owner"], "alice");
    assert_eq!(lock["ttl_ms"], 10_000);
    let token = lock["fencing_token"].as_u64().unwrap();
    assert!(
        token > 0 && token < (1 << 53),
        "tokens are JSON-safe integers"
    );
    assert!(lock["validity_ms"].as_u64().unwrap() < 10_000);
    assert!(lock["granted_regions"].as_array().unwrap().len() >= 2);

    // Held: 409 naming the holder, with Retry-After.
    let held = cluster
        .send_json(
            rest,
            "POST",
            "/locks",
            &json!({"resource": "orders/42", "owner": "bob", "ttl_ms": 10_000}),
        )
        .await?;
    assert_problem(&held, 409);
    assert_eq!(held.json()["holder"]["owner"], "alice");
    assert!(held.json()["holder"]["expires_in_ms"].as_u64().unwrap() > 0);
    assert!(held.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);

    let got = cluster
        .http(rest, "GET", &format!("/locks/{lock_id}"), &[], None)
        .await?;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["fencing_token"], token);
    assert!(got.json()["expires_in_ms"].as_u64().unwrap() > 0);

    let resource = cluster
        .http(rest, "GET", "/resources/orders%2F42", &[], None)
        .await?;
    assert_eq!(resource.status, 200);
    assert_eq!(resource.json()["held"], true);
    assert_eq!(resource.json()["owner"], "alice");
    assert_eq!(resource.json()["fencing_token"], token);

    let shared = &cluster;
    let validate = |t: u64| async move {
        shared
            .send_json(
                rest,
                "POST",
                "/resources/orders%2F42/validate",
                &json!({"fencing_token": t}),
            )
            .await
    };
    let current = validate(token).await?;
    assert_eq!(current.status, 200);
    assert_eq!(
        current.json(),
        json!({"current": true, "current_token": token})
    );
    assert_eq!(validate(token - 1).await?.json()["current"], false);

    let renewed = cluster
        .send_json(
            rest,
            "PUT",
            &format!("/locks/{lock_id}/renew"),
            &json!({"ttl_ms": 20_000}),
        )
        .await?;
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(renewed.json()["fencing_token"], token);
    assert_eq!(renewed.json()["ttl_ms"], 20_000);
    assert!(renewed.json()["validity_ms"].as_u64().unwrap() > 10_000);
    // No ttl_ms: renew with the granted TTL.
    let kept = cluster
        .send_json(rest, "PUT", &format!("/locks/{lock_id}/renew"), &json!({}))
        .await?;
    assert_eq!(kept.status, 200, "{}", kept.body);

    let deleted = cluster
        .http(rest, "DELETE", &format!("/locks/{lock_id}"), &[], None)
        .await?;
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());
    for (method, path) in [
        ("DELETE", format!("/locks/{lock_id}")),
        ("GET", format!("/locks/{lock_id}")),
    ] {
        assert_problem(&cluster.http(rest, method, &path, &[], None).await?, 404);
    }
    assert_problem(
        &cluster
            .send_json(
                rest,
                "PUT",
                &format!("/locks/{lock_id}/renew"),
                &json!({"ttl_ms": 5_000}),
            )
            .await?,
        404,
    );
    let free = cluster
        .http(rest, "GET", "/resources/orders%2F42", &[], None)
        .await?;
    assert_eq!(free.json(), json!({"resource": "orders/42", "held": false}));
    assert_eq!(
        validate(token).await?.json(),
        json!({"current": false, "current_token": 0})
    );

    assert_eq!(
        cluster
            .http(rest, "GET", "/healthz", &[], None)
            .await?
            .status,
        200
    );
    let ready = cluster.http(rest, "GET", "/readyz", &[], None).await?;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.json()["ready"], true);
    let spec = cluster
        .http(rest, "GET", "/openapi.json", &[], None)
        .await?;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.json()["openapi"], "3.0.3");
    assert_problem(&cluster.http(rest, "GET", "/nope", &[], None).await?, 404);
    assert_problem(
        &cluster.http(rest, "PATCH", "/locks", &[], None).await?,
        405,
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_grpc_name_round_trips_percent_encoded_and_both_doors_agree() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let rest = cluster.rest_addrs[0];
    let mut grpc = cluster.client(0).await?;

    for name in [
        "a/b/c",
        "with space",
        "naïve ☃/ünïcødé",
        "percent%2Fliteral",
        "q?x=1#frag",
        "+plus&amp",
    ] {
        let created = cluster
            .send_json(
                rest,
                "POST",
                "/locks",
                &json!({"resource": name, "owner": "rest", "ttl_ms": 5_000}),
            )
            .await?;
        assert_eq!(created.status, 201, "{name}: {}", created.body);
        assert_eq!(created.json()["resource"], name);
        let token = created.json()["fencing_token"].as_u64().unwrap();

        // gRPC sees the lock REST made.
        let described = grpc
            .describe(DescribeRequest {
                resource: name.into(),
            })
            .await?
            .into_inner();
        assert!(described.held, "{name}");
        assert_eq!(described.fencing_token, token);

        // REST finds it by its percent-encoded name.
        let path = format!("/resources/{}", encode_segment(name));
        let got = cluster.http(rest, "GET", &path, &[], None).await?;
        assert_eq!(got.status, 200, "{name}: {}", got.body);
        assert_eq!(got.json()["resource"], name);
        assert_eq!(got.json()["fencing_token"], token);

        // gRPC releases what REST acquired.
        let lock_id = created.json()["lock_id"].as_str().unwrap().to_owned();
        grpc.release(ReleaseRequest { lock_id }).await?;
        assert_eq!(
            cluster.http(rest, "GET", &path, &[], None).await?.json()["held"],
            false
        );
    }

    // And REST releases what gRPC acquired.
    let granted = grpc
        .acquire(acquire("shared/doc", "grpc", 5_000, 0))
        .await?
        .into_inner();
    let got = cluster
        .http(
            rest,
            "GET",
            &format!("/locks/{}", granted.lock_id),
            &[],
            None,
        )
        .await?;
    assert_eq!(got.json()["fencing_token"], granted.fencing_token);
    assert_eq!(
        cluster
            .http(
                rest,
                "DELETE",
                &format!("/locks/{}", granted.lock_id),
                &[],
                None
            )
            .await?
            .status,
        204
    );
    let described = grpc
        .describe(DescribeRequest {
            resource: "shared/doc".into(),
        })
        .await?
        .into_inner();
    assert!(!described.held);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_idempotency_keys() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let rest = cluster.rest_addrs[0];

    for (body, field) in [
        (
            r#"{"resource": "", "owner": "o", "ttl_ms": 5000}"#,
            Some("resource"),
        ),
        (
            r#"{"resource": "a/../b", "owner": "o", "ttl_ms": 5000}"#,
            Some("resource"),
        ),
        (
            r#"{"resource": "nul\u0000", "owner": "o", "ttl_ms": 5000}"#,
            Some("resource"),
        ),
        (
            r#"{"resource": "r", "owner": "", "ttl_ms": 5000}"#,
            Some("owner"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": 0}"#,
            Some("ttl_ms"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": 999}"#,
            Some("ttl_ms"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": 300001}"#,
            Some("ttl_ms"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": -5}"#,
            Some("ttl_ms"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": 1.5}"#,
            Some("ttl_ms"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": "5000"}"#,
            Some("ttl_ms"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": 5000, "wait_ms": 60001}"#,
            Some("wait_ms"),
        ),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": 5000, "extra": 1}"#,
            None,
        ),
        (r#"{"resource": "r", "owner": "o"}"#, None),
        (
            r#"{"resource": "r", "owner": "o", "ttl_ms": 5000} trailing"#,
            None,
        ),
        (r#"{"resource": "r", "#, None),
        ("[]", None),
        ("", None),
    ] {
        let response = cluster
            .http(rest, "POST", "/locks", &[], Some(body))
            .await?;
        assert_problem(&response, 400);
        if let Some(field) = field {
            assert_eq!(response.json()["field"], field, "{body}: {}", response.body);
        }
    }
    let big = format!(
        r#"{{"resource": "r", "owner": "{}", "ttl_ms": 5000}}"#,
        "o".repeat(70_000)
    );
    assert_problem(
        &cluster
            .http(rest, "POST", "/locks", &[], Some(&big))
            .await?,
        413,
    );
    let form = cluster
        .http(
            rest,
            "POST",
            "/locks",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some("resource=r"),
        )
        .await?;
    assert_problem(&form, 415);
    // A path that is not a lock id names no lock: 404 over REST.
    for method in ["GET", "DELETE"] {
        assert_problem(
            &cluster
                .http(rest, method, "/locks/not-a-lock-id", &[], None)
                .await?,
            404,
        );
    }
    assert_problem(
        &cluster
            .http(rest, "GET", "/resources/a%2F..%2Fb", &[], None)
            .await?,
        400,
    );
    assert_problem(
        &cluster
            .http(rest, "GET", "/resources/%FF%FE", &[], None)
            .await?,
        400,
    );
    // None of those locked anything.
    assert_eq!(
        cluster
            .http(rest, "GET", "/resources/r", &[], None)
            .await?
            .json()["held"],
        false
    );

    // Idempotency-Key: same key and body → same lock; other body → 422.
    let body = r#"{"resource": "jobs/1", "owner": "cron", "ttl_ms": 5000}"#;
    let cluster = &cluster;
    let with_key = |key: &'static str, body: &'static str| async move {
        cluster
            .http(
                rest,
                "POST",
                "/locks",
                &[("Idempotency-Key", key)],
                Some(body),
            )
            .await
    };
    let first = with_key("k-1", body).await?;
    assert_eq!(first.status, 201);
    let retry = with_key("k-1", body).await?;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.json()["lock_id"], first.json()["lock_id"]);
    assert_eq!(retry.json()["fencing_token"], first.json()["fencing_token"]);
    let other = with_key(
        "k-1",
        r#"{"resource": "jobs/1", "owner": "cron", "ttl_ms": 9000}"#,
    )
    .await?;
    assert_problem(&other, 422);
    assert_problem(&with_key("has space", body).await?, 400);
    assert_problem(&with_key("", body).await?, 400);

    // Renew: explicit 0 and out-of-bounds TTLs are 400; the lock is untouched.
    let lock_id = first.json()["lock_id"].as_str().unwrap().to_owned();
    for bad in [
        json!({"ttl_ms": 0}),
        json!({"ttl_ms": 300_001}),
        json!({"ttl": 5}),
        json!({"ttl_ms": -1}),
        json!({"ttl_ms": null}),
    ] {
        assert_problem(
            &cluster
                .send_json(rest, "PUT", &format!("/locks/{lock_id}/renew"), &bad)
                .await?,
            400,
        );
    }
    assert_problem(
        &cluster
            .send_json(
                rest,
                "POST",
                "/resources/jobs%2F1/validate",
                &json!({"fencing_token": "x"}),
            )
            .await?,
        400,
    );
    assert_eq!(
        cluster
            .http(rest, "GET", &format!("/locks/{lock_id}"), &[], None)
            .await?
            .status,
        200
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quorum_is_503_with_retry_after_and_regions() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions::default()).await?;
    let rest = cluster.rest_addrs[0];
    let held = cluster
        .send_json(
            rest,
            "POST",
            "/locks",
            &json!({"resource": "r", "owner": "o", "ttl_ms": 30_000}),
        )
        .await?;
    let lock_id = held.json()["lock_id"].as_str().unwrap().to_owned();
    cluster.stop_region(1).await;
    cluster.stop_region(2).await;

    let created = cluster
        .send_json(
            rest,
            "POST",
            "/locks",
            &json!({"resource": "s", "owner": "o", "ttl_ms": 5_000}),
        )
        .await?;
    assert_problem(&created, 503);
    assert!(created.header("retry-after").is_some());
    assert_eq!(created.json()["reachable_regions"], json!(["region-a"]));
    let unreachable: Vec<_> = created.json()["unreachable_regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].clone())
        .collect();
    assert_eq!(unreachable, vec![json!("region-b"), json!("region-c")]);
    assert_problem(
        &cluster
            .send_json(
                rest,
                "PUT",
                &format!("/locks/{lock_id}/renew"),
                &json!({"ttl_ms": 5_000}),
            )
            .await?,
        503,
    );
    let ready = harness::eventually(
        std::time::Duration::from_secs(5),
        "readyz turns 503",
        || async {
            let r = cluster.http(rest, "GET", "/readyz", &[], None).await.ok()?;
            (r.status == 503).then_some(r)
        },
    )
    .await;
    assert_problem(&ready, 503);
    assert!(ready.header("retry-after").is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_without_body_unencoded_slashes_bad_escapes_missing_fields_and_servers()
-> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let rest = cluster.rest_addrs[0];
    let created = cluster
        .send_json(
            rest,
            "POST",
            "/locks",
            &json!({"resource": "jobs/no-body", "owner": "o", "ttl_ms": 10_000}),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let lock_id = created.json()["lock_id"].as_str().unwrap().to_owned();
    let renew = format!("/locks/{lock_id}/renew");

    // ttl_ms is optional, so is the body: no body at all (no Content-Type), an
    // empty JSON body, and curl's `-XPUT -d ''` (form type, zero bytes) all renew
    // with the granted TTL.
    for (headers, body) in [
        (&[][..], None),
        (&[][..], Some("")),
        (
            &[("Content-Type", "application/x-www-form-urlencoded")][..],
            Some(""),
        ),
    ] {
        let renewed = cluster.http(rest, "PUT", &renew, headers, body).await?;
        assert_eq!(
            renewed.status, 200,
            "{headers:?} {body:?}: {}",
            renewed.body
        );
        assert_eq!(renewed.json()["ttl_ms"], 10_000);
        assert_eq!(renewed.json()["lock_id"], lock_id.as_str());
    }
    // A body that is there must still be JSON.
    assert_problem(
        &cluster
            .http(
                rest,
                "PUT",
                &renew,
                &[("Content-Type", "text/plain")],
                Some("ttl_ms=5000"),
            )
            .await?,
        415,
    );

    // An unencoded `/` in a resource name: the 404 says to write it as %2F.
    for (method, path) in [
        ("GET", "/resources/jobs/no-body"),
        ("POST", "/resources/jobs/no-body/validate"),
    ] {
        let response = cluster.http(rest, method, path, &[], Some("{}")).await?;
        assert_problem(&response, 404);
        let detail = response.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            detail.contains("%2F") && detail.contains("jobs%2Fno-body"),
            "{path}: {detail}"
        );
    }
    // Still a plain 404 elsewhere.
    let elsewhere = cluster.http(rest, "GET", "/nope/deeper", &[], None).await?;
    assert_problem(&elsewhere, 404);
    assert!(!elsewhere.body.contains("%2F"), "{}", elsewhere.body);

    // Invalid percent-encoding is 400, never taken literally.
    for (method, path, field) in [
        ("GET", "/resources/jobs%ZZ", "resource"),
        ("GET", "/resources/100%", "resource"),
        ("GET", "/resources/a%2", "resource"),
        ("POST", "/resources/jobs%zz/validate", "resource"),
        ("GET", "/locks/abc%ZZ", "lock_id"),
    ] {
        let response = cluster
            .http(
                rest,
                method,
                path,
                &[],
                Some(r#"{"fencing_token": 1}"#).filter(|_| method == "POST"),
            )
            .await?;
        assert_problem(&response, 400);
        assert_eq!(response.json()["field"], field, "{path}: {}", response.body);
        assert!(
            response.json()["detail"].as_str().unwrap().contains("%25"),
            "{path}: {}",
            response.body
        );
    }
    assert_eq!(
        cluster
            .http(rest, "GET", "/resources/jobs%25ZZ", &[], None)
            .await?
            .json()["resource"],
        "jobs%ZZ",
        "a literal % is written %25"
    );

    // Missing and unknown fields are named in `field`.
    for (path, body, field) in [
        ("/locks", r#"{"resource": "r", "owner": "o"}"#, "ttl_ms"),
        ("/locks", r#"{"owner": "o", "ttl_ms": 5000}"#, "resource"),
        ("/locks", r#"{"resource": "r", "ttl_ms": 5000}"#, "owner"),
        (
            "/locks",
            r#"{"resource": "r", "owner": "o", "ttl_ms": 5000, "extra": 1}"#,
            "extra",
        ),
        ("/resources/r/validate", "{}", "fencing_token"),
        (renew.as_str(), r#"{"ttl": 5}"#, "ttl"),
    ] {
        let method = if path.ends_with("/renew") {
            "PUT"
        } else {
            "POST"
        };
        let response = cluster.http(rest, method, path, &[], Some(body)).await?;
        assert_problem(&response, 400);
        assert_eq!(response.json()["field"], field, "{body}: {}", response.body);
    }

    // The OpenAPI document names a server (make dev's REST address).
    let spec = cluster
        .http(rest, "GET", "/openapi.json", &[], None)
        .await?
        .json();
    assert_eq!(spec["servers"][0]["url"], "http://127.0.0.1:7480", "{spec}");
    assert_eq!(
        spec["paths"]["/locks/{lock_id}/renew"]["put"]["requestBody"]["required"],
        false
    );
    Ok(())
}
