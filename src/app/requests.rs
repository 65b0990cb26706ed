//! Socket requests: a validated [`Request`] (from a `/rtc` frame or a Socket.IO event, see
//! [`crate::signaling::wire`]) becomes one call to an operation of the application layer, and
//! its result the acknowledgement body. Both socket transports go through [`Signaling::handle`].

use std::sync::Arc;

use serde_json::{json, Value};

use crate::app::{Done, Origin, Signaling};
use crate::auth::Principal;
use crate::error::Error;
use crate::signaling::switchboard::SessionId;
use crate::signaling::wire::{AnswerStyle, Request};
use crate::views;

/// How a request is answered: `ack` (or `pong`) with a body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub kind: &'static str,
    pub body: Value,
}

fn ack(body: Value) -> Answer {
    Answer { kind: "ack", body }
}

impl Signaling {
    /// Carries out one socket request from `me` on `session`.
    pub async fn handle(
        self: &Arc<Self>,
        session: SessionId,
        me: &Principal,
        request: Request,
    ) -> Result<Done<Answer>, Error> {
        let origin = Origin::Session(session);
        let call_ack = |id: &str| ack(json!({ "callId": id }));
        match request {
            Request::Ping => Ok(self.done(
                Answer {
                    kind: "pong",
                    body: json!({}),
                },
                Vec::new(),
            )),
            Request::Invite(invite) => Ok(self
                .invite(session, me, invite)
                .await?
                .map(|call| ack(json!({ "callId": call.id, "roomId": call.room_id })))),
            Request::Accept { call_id } => Ok(self
                .accept(origin, me, &call_id)
                .await?
                .map(|call| call_ack(&call.id))),
            Request::Reject { call_id, reason } => Ok(self
                .reject(me, &call_id, reason)
                .await?
                .map(|call| call_ack(&call.id))),
            Request::Answer {
                call,
                sdp,
                to,
                style,
            } => {
                let id = self.resolve(me, &call)?;
                let on_active = match style {
                    AnswerStyle::Rtc => "call-answer",
                    AnswerStyle::Seed => "call-sdp-update",
                };
                Ok(self
                    .answer(session, me, &id, sdp, to.as_deref(), on_active)
                    .await?
                    .map(|()| call_ack(&id)))
            }
            Request::Offer { call, sdp, to } => {
                let id = self.resolve(me, &call)?;
                Ok(self
                    .offer(session, me, &id, sdp, to.as_deref())
                    .await?
                    .map(|()| call_ack(&id)))
            }
            Request::Candidate {
                call,
                candidate,
                to,
            } => {
                let id = self.resolve(me, &call)?;
                Ok(self
                    .candidate(session, me, &id, candidate, to.as_deref())
                    .await?
                    .map(|()| call_ack(&id)))
            }
            Request::SdpUpdate { call_id, sdp, to } => Ok(self
                .sdp_update(session, me, &call_id, sdp, to.as_deref())
                .await?
                .map(|()| call_ack(&call_id))),
            Request::Hangup { call } => {
                let id = self.resolve(me, &call)?;
                Ok(self
                    .hangup(me, &id)
                    .await?
                    .map(|call| call_ack(&call.id)))
            }
            Request::Media { call_id, change } => Ok(self
                .media(me, &call_id, change, "media")
                .await?
                .map(|call| call_ack(&call.id))),
            Request::Stats { call_id, stats } => Ok(self
                .report_stats(me, &call_id, stats)
                .await?
                .map(|()| ack(json!({})))),
            Request::RoomJoin { room_id } => Ok(self
                .join_room(origin, me, &room_id)
                .await?
                .map(|j| {
                    ack(json!({
                        "room": views::room(&j.joined.room),
                        "peerId": j.joined.peer_id,
                        "callId": j.joined.call_id,
                        "peers": j.peers.iter().map(|(p, u)| json!({ "peerId": p, "userId": u })).collect::<Vec<_>>(),
                        "topology": j.topology.as_str(),
                    }))
                })),
            Request::RoomLeave { room_id } => Ok(self
                .leave_room(me, &room_id)
                .await?
                .map(|left| ack(json!({ "roomId": left.room.id })))),
            Request::SfuLeave { call_id } => Ok(self
                .sfu_leave(session, me, &call_id)
                .await?
                .map(|()| call_ack(&call_id))),
            Request::SfuView {
                call_id,
                tiles,
                max_bitrate,
            } => Ok(self
                .sfu_view(session, me, &call_id, tiles, max_bitrate)
                .await?
                .map(|()| call_ack(&call_id))),
        }
    }
}
