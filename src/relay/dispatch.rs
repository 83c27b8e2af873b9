//! One client message on its way in: the size gate, the rate gate (the
//! reader pauses; refused only past the hard ceiling), parsing, and the
//! hand-off to its handler (ingest, queries, NIP-77, AUTH). A message
//! refused at a gate is answered in the form its sender waits for.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;

use super::client::Client;
use super::connection::Local;
use super::count;
use super::ingest;
use super::limits::{Admission, IpRate};
use super::messages::{self, Addressee, ClientMessage, MessageType};
use super::neg_sessions;
use super::queries;
use super::Relay;
use crate::event::Event;
use crate::refusal::Refusal;

/// Which rate a message counts against: EVENT against the events rate,
/// every other message that costs work against the requests rate; closing
/// a subscription or session costs nothing and is never held back.
fn rate_of(relay: &Relay, kind: Option<MessageType>) -> Option<(&IpRate, Refusal)> {
    match kind {
        Some(MessageType::Close | MessageType::NegClose) => None,
        Some(MessageType::Event) => Some((
            &relay.event_rate,
            Refusal::rate_limited("slow down, too many events"),
        )),
        _ => Some((
            &relay.req_rate,
            Refusal::rate_limited("slow down, too many requests"),
        )),
    }
}

pub(super) async fn handle_text(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    local: &mut Local,
    text: &str,
) {
    let limits = &relay.config.limits;
    let kind = messages::message_type(text);
    if text.len() > limits.max_message_size {
        let negentropy = kind.is_some_and(MessageType::is_negentropy);
        let limit = match negentropy {
            true => limits.max_negentropy_message_size,
            false => limits.max_message_size,
        };
        if text.len() > limit {
            let reason = Refusal::invalid(format!(
                "message too large ({} > {limit} bytes)",
                text.len()
            ));
            refuse_addressed(relay, client, local, text, &reason);
            return;
        }
    }
    if let Some((rate, over)) = rate_of(relay, kind) {
        if !paced(relay, client, &mut local.burst, rate).await {
            refuse_addressed(relay, client, local, text, &over);
            return;
        }
    }
    dispatch(relay, client, local, text).await;
}

async fn dispatch(relay: &Arc<Relay>, client: &Arc<Client>, local: &mut Local, text: &str) {
    match messages::parse_client_message(text, &relay.parse_limits) {
        Err(e) => {
            let reply = match &e.sub_id {
                Some(id) if e.negentropy => messages::neg_err(id, &e.reason),
                Some(id) => messages::closed(id, &e.reason),
                None => messages::notice_msg(&e.reason),
            };
            client.outbox.send(reply);
        }
        Ok(ClientMessage::Event(raw)) => ingest::admit(relay, client, &mut local.burst, raw),
        Ok(ClientMessage::Req { sub_id, filters }) => {
            queries::handle_req(relay, client, &mut local.subs, sub_id, filters)
        }
        Ok(ClientMessage::Count { sub_id, filters }) => {
            count::handle_count(relay, client, sub_id, filters)
        }
        Ok(ClientMessage::Close(sub_id)) => local.subs.end(relay, client, &sub_id),
        Ok(ClientMessage::Auth(raw)) => handle_auth(relay, client, raw).await,
        Ok(ClientMessage::NodeAuth(nonce)) => handle_node_auth(relay, client, nonce).await,
        Ok(ClientMessage::NegOpen { sub_id, .. })
        | Ok(ClientMessage::NegMsg { sub_id, .. })
        | Ok(ClientMessage::NegClose { sub_id })
            if !relay.config.negentropy.enabled =>
        {
            let reason = Refusal::blocked("NIP-77 negentropy is not enabled on this relay");
            client.outbox.send(messages::neg_err(&sub_id, &reason));
        }
        Ok(ClientMessage::NegOpen {
            sub_id,
            filter,
            message,
        }) => neg_sessions::handle_open(relay, client, &local.neg, sub_id, filter, message),
        Ok(ClientMessage::NegMsg { sub_id, message }) => {
            neg_sessions::handle_msg(relay, client, &local.neg, sub_id, message)
        }
        Ok(ClientMessage::NegClose { sub_id }) => {
            local.neg.close(&sub_id);
        }
    }
}

/// Refuses a message at a gate in the form its sender waits for: OK false,
/// CLOSED or NEG-ERR (which also end the subscription or session of that
/// id), NOTICE only when neither type nor id can be read.
fn refuse_addressed(
    relay: &Relay,
    client: &Client,
    local: &mut Local,
    text: &str,
    reason: &Refusal,
) {
    let reply = match messages::addressee(text) {
        Addressee::Event(id) => ingest::refusal(relay, Some(&id), reason),
        Addressee::Query(sub_id) => {
            local.subs.end(relay, client, &sub_id);
            messages::closed(&sub_id, reason)
        }
        Addressee::Negentropy(sub_id) => {
            local.neg.close(&sub_id);
            messages::neg_err(&sub_id, reason)
        }
        Addressee::Unknown => messages::notice_msg(reason),
    };
    client.outbox.send(reply);
}

async fn handle_auth(relay: &Arc<Relay>, client: &Arc<Client>, raw: &RawValue) {
    let event = match Event::from_raw(raw) {
        Ok(event) => event,
        Err(e) => {
            let id = messages::salvage_event_id(raw);
            let reply = match id {
                Some(id) => messages::refused(&id, &e.refusal()),
                None => messages::notice_msg(&e.refusal()),
            };
            client.outbox.send(reply);
            return;
        }
    };
    let job_client = client.clone();
    relay
        .verify
        .run(move || {
            let id = event.id_hex();
            let result = event
                .verify()
                .map_err(|e| e.refusal())
                .and_then(|_| job_client.auth.accept(&event));
            let reply = match result {
                Ok(()) => messages::accepted(&id),
                Err(reason) => messages::refused(&id, &reason),
            };
            job_client.outbox.send(reply);
        })
        .await;
}

/// Signs a dialling node's nonce with the node key, once per connection
/// (a signature costs CPU; one proof is all a node needs).
async fn handle_node_auth(relay: &Arc<Relay>, client: &Arc<Client>, nonce: String) {
    if !client.auth.take_node_proof() {
        let reason = Refusal::invalid("NODE-AUTH is answered once per connection");
        client.outbox.send(messages::notice_msg(&reason));
        return;
    }
    let (key, job_client) = (relay.node_key.clone(), client.clone());
    relay
        .verify
        .run(move || {
            let proof = crate::node_auth::proof(&key, &nonce, job_client.auth.relay_url());
            job_client
                .outbox
                .send(messages::node_proof(&proof.to_json()));
        })
        .await;
}

/// Waits until `rate` allows one more message from `client`: its socket is
/// not read meanwhile, so TCP paces the sender. The EVENTs read so far go on
/// first, so the wait holds nothing up. False past the hard ceiling
/// (`limits.max_pace_ms`), or when the relay shuts down or the client is
/// being dropped as a slow reader meanwhile: the message is to be refused.
async fn paced(
    relay: &Arc<Relay>,
    client: &Arc<Client>,
    burst: &mut ingest::Burst,
    rate: &IpRate,
) -> bool {
    if let Admission::Now = rate.try_now(client.ip) {
        return true;
    }
    ingest::flush(relay, client, burst).await;
    let ceiling = Duration::from_millis(relay.config.limits.max_pace_ms);
    let mut shutdown = relay.shutdown.clone();
    let allowed = tokio::select! {
        allowed = rate.pace(client.ip, ceiling) => allowed,
        _ = shutdown.wait_for(|stopping| *stopping) => false,
        _ = client.outbox.overflowed() => false,
    };
    if allowed {
        relay.metrics.messages_paced.fetch_add(1, Relaxed);
    }
    allowed
}
