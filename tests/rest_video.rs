//! Seed 000's `/api/video/calls` endpoints and their `{success, data}` envelope.

mod common;

use common::Server;
use serde_json::json;

#[tokio::test]
async fn host_creates_guest_joins_and_either_ends() {
    let s = Server::start();
    let (host, guest, other) = (s.client("host"), s.client("guest"), s.client("other"));

    let created = host
        .post("/api/video/calls", json!({"room_name": "demo"}))
        .await
        .expect(201);
    assert_eq!(created["success"], true);
    let data = &created["data"];
    let id = data["id"].as_str().expect("id").to_string();
    assert_eq!(data["host_id"], "host");
    assert_eq!(data["guest_id"], serde_json::Value::Null);
    assert_eq!(data["status"], "pending");
    assert_eq!(data["room_name"], "demo");

    // No body at all is fine too (room_name is optional).
    let bare = host.post_empty("/api/video/calls").await.expect(201);
    assert_eq!(bare["data"]["room_name"], serde_json::Value::Null);

    host.post_empty(&format!("/api/video/calls/{id}/join"))
        .await
        .expect(409);
    let joined = guest
        .post_empty(&format!("/api/video/calls/{id}/join"))
        .await
        .expect(200);
    assert_eq!(joined["success"], true);
    assert_eq!(joined["data"]["status"], "active");
    assert_eq!(joined["data"]["guest_id"], "guest");
    // Joining again is idempotent; a third user cannot take the seat (nor see the call).
    assert_eq!(
        guest
            .post_empty(&format!("/api/video/calls/{id}/join"))
            .await
            .expect(200)["data"]["status"],
        "active"
    );
    let r = other
        .post_empty(&format!("/api/video/calls/{id}/join"))
        .await;
    assert_eq!(r.status.as_u16(), 404);
    assert_eq!(r.body["success"], false);

    let got = guest
        .get(&format!("/api/video/calls/{id}"))
        .await
        .expect(200);
    assert_eq!(got["data"]["id"], id.as_str());

    let ended = guest
        .post_empty(&format!("/api/video/calls/{id}/end"))
        .await
        .expect(200);
    assert_eq!(ended["data"]["status"], "ended");
    let again = host.post_empty(&format!("/api/video/calls/{id}/end")).await;
    assert_eq!(again.status.as_u16(), 409);
    assert_eq!(again.body["success"], false);
    assert_eq!(again.body["error"]["code"], "call_ended");

    // The same call through seed 001's view.
    let session = host.get(&format!("/calls/{id}")).await.expect(200)["callSession"].clone();
    assert_eq!(session["status"], "ended");
    assert_eq!(session["calleeId"], "guest");
}

#[tokio::test]
async fn host_ending_a_pending_call_and_error_envelopes() {
    let s = Server::start();
    let host = s.client("host");
    let id = host.post_empty("/api/video/calls").await.expect(201)["data"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_eq!(
        host.post_empty(&format!("/api/video/calls/{id}/end"))
            .await
            .expect(200)["data"]["status"],
        "ended"
    );
    s.client("guest")
        .post_empty(&format!("/api/video/calls/{id}/join"))
        .await
        .expect(409);

    for (reply, status, code) in [
        (
            host.get("/api/video/calls/not-a-uuid").await,
            400,
            "invalid_id",
        ),
        (
            host.get("/api/video/calls/00000000-0000-4000-8000-000000000000")
                .await,
            404,
            "not_found",
        ),
        (
            s.anonymous().post_empty("/api/video/calls").await,
            401,
            "unauthorized",
        ),
        (
            host.raw(
                reqwest::Method::POST,
                "/api/video/calls",
                Some("application/json"),
                b"{oops".to_vec(),
            )
            .await,
            400,
            "invalid_json",
        ),
        (
            host.post("/api/video/calls", json!({"room_name": 7})).await,
            400,
            "invalid_field",
        ),
    ] {
        assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
        assert_eq!(reply.body["success"], false, "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], code, "{}", reply.body);
        assert!(reply.body["error"]["message"].is_string());
    }
}
