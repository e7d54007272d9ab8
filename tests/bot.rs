//! The Discord bot end to end: the real `keeper run` against a fake Discord
//! on 127.0.0.1 (HTTP API and gateway, via the testing knob
//! `DISCORD_API_BASE`), on temporary copies of real database files.
//!
//! The fake speaks just enough of Discord for serenity 0.12.5: `GET /gateway`,
//! HELLO / IDENTIFY / READY, heartbeat ACKs, interaction callbacks answered
//! with 204, and it records every HTTP request so the test can look at the
//! command registration, the modal and the replies.

use crate::common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::websocket::{Message, WebSocket};
use poem::web::{Data, Path};
use poem::{Body, EndpointExt, IntoResponse, Request, Response, Route, Server, get, handler};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const APP_ID: &str = "999";
const GUILD_ID: &str = "4242";
const USER_ID: &str = "123456789012345678";

/// One HTTP request the bot made.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    /// The JSON body; for a multipart body (a message with a file), its
    /// `payload_json` part.
    body: Value,
    /// The body as text (files included).
    raw: String,
    /// When it arrived.
    at: Instant,
}

struct FakeState {
    port: u16,
    requests: Mutex<Vec<Recorded>>,
    /// Dispatch events (name, data) for each shard's gateway session, by
    /// shard; taken by the session that IDENTIFYs (or RESUMEs) as that shard.
    outboxes: Mutex<std::collections::HashMap<u64, mpsc::UnboundedReceiver<(String, Value)>>>,
    /// The shard count `GET /gateway/bot` recommends.
    shard_count: u64,
    /// The `shard` array of every IDENTIFY, in arrival order.
    identified: Mutex<Vec<Value>>,
    /// The application's registered commands; `guild_id` null for global ones.
    commands: Mutex<Vec<Value>>,
    next_id: AtomicU64,
    /// When false the gateway refuses connections (an outage).
    accepting: AtomicBool,
    /// Closes the live gateway connection.
    kick: tokio::sync::Notify,
    /// Discord's CDN: attachments served at `/cdn/…` (path → content type, bytes).
    files: Mutex<std::collections::HashMap<String, (String, Vec<u8>)>>,
}

/// A fake Discord: serves until the test ends.
struct FakeDiscord {
    state: Arc<FakeState>,
    /// Each shard's dispatch channel, by shard number.
    events: Vec<mpsc::UnboundedSender<(String, Value)>>,
}

impl FakeDiscord {
    async fn start() -> FakeDiscord {
        FakeDiscord::with_commands(Vec::new()).await
    }

    /// A fake whose application already has `commands` (another bot's).
    async fn with_commands(commands: Vec<Value>) -> FakeDiscord {
        FakeDiscord::serve(commands, 1).await
    }

    /// A fake whose `GET /gateway/bot` recommends `shards` shards, each
    /// with a session of its own.
    async fn with_shards(shards: u64) -> FakeDiscord {
        FakeDiscord::serve(Vec::new(), shards).await
    }

    async fn serve(commands: Vec<Value>, shard_count: u64) -> FakeDiscord {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.expect("bind");
        let port = acceptor.local_addr()[0].as_socket_addr().expect("tcp").port();
        let (events, outboxes): (Vec<_>, std::collections::HashMap<_, _>) = (0..shard_count)
            .map(|shard| {
                let (events, outbox) = mpsc::unbounded_channel();
                (events, (shard, outbox))
            })
            .unzip();
        let state = Arc::new(FakeState {
            port,
            requests: Mutex::new(Vec::new()),
            outboxes: Mutex::new(outboxes),
            shard_count,
            identified: Mutex::new(Vec::new()),
            commands: Mutex::new(commands),
            next_id: AtomicU64::new(100_000),
            accepting: AtomicBool::new(true),
            kick: tokio::sync::Notify::new(),
            files: Mutex::new(std::collections::HashMap::new()),
        });
        let app = Route::new()
            .at("/api/v10/gateway", get(gateway_url))
            .at("/api/v10/gateway/bot", get(gateway_url))
            .at("/gateway", get(gateway))
            .at("/*rest", record)
            .data(state.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        FakeDiscord { state, events }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.state.port)
    }

    fn send(&self, event: &str, data: Value) {
        self.send_on(0, event, data);
    }

    /// Dispatches `event` on shard `shard`'s session.
    fn send_on(&self, shard: usize, event: &str, data: Value) {
        self.events[shard]
            .send((event.to_owned(), data))
            .expect("gateway task alive");
    }

    /// Sends an interaction on shard `shard` and waits for the callback; returns its body.
    async fn interact_on(&self, shard: usize, interaction: Value, log: &Arc<Mutex<String>>) -> Value {
        let path = callback_path(&interaction);
        self.send_on(shard, "INTERACTION_CREATE", interaction);
        self.wait_recorded("POST", &path, log).await.body
    }

    /// The `shard` arrays of the IDENTIFYs so far.
    fn identified(&self) -> Vec<Value> {
        self.state.identified.lock().unwrap().clone()
    }

    /// Waits for a request matching `method` and `path`; returns it.
    async fn wait_recorded(&self, method: &str, path: &str, log: &Arc<Mutex<String>>) -> Recorded {
        self.wait_nth_recorded(1, method, path, log).await
    }

    /// Waits for the `n`th request matching `method` and `path`; returns it.
    async fn wait_nth_recorded(&self, n: usize, method: &str, path: &str, log: &Arc<Mutex<String>>) -> Recorded {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self
                .state
                .requests
                .lock()
                .unwrap()
                .iter()
                .filter(|r| r.method == method && r.path == path)
                .nth(n - 1)
            {
                return r.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no {method} {path}; requests: {:#?}\nlog:\n{}",
                    self.state.requests.lock().unwrap(),
                    log.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a request matching `method` and `path`; returns its body.
    async fn wait_request(&self, method: &str, path: &str, log: &Arc<Mutex<String>>) -> Value {
        self.wait_recorded(method, path, log).await.body
    }

    /// Sends an interaction and waits for the bot's callback; returns its body.
    async fn interact(&self, interaction: Value, log: &Arc<Mutex<String>>) -> Value {
        self.interact_timed(interaction, log).await.0
    }

    /// Sends an interaction and waits for the bot's callback; returns its
    /// body and how long after the event was sent the callback arrived.
    async fn interact_timed(&self, interaction: Value, log: &Arc<Mutex<String>>) -> (Value, Duration) {
        let path = callback_path(&interaction);
        let sent = Instant::now();
        self.send("INTERACTION_CREATE", interaction);
        let recorded = self.wait_recorded("POST", &path, log).await;
        (recorded.body, recorded.at.duration_since(sent))
    }

    /// Serves `bytes` as `content_type` at `path` (under `/cdn/`); returns its URL.
    fn serve_file(&self, path: &str, content_type: &str, bytes: Vec<u8>) -> String {
        assert!(path.starts_with("/cdn/"), "{path}");
        let file = (content_type.to_owned(), bytes);
        self.state.files.lock().unwrap().insert(path.to_owned(), file);
        format!("{}{path}", self.base())
    }

    fn commands(&self) -> Vec<Value> {
        self.state.commands.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }
}

fn callback_path(interaction: &Value) -> String {
    format!(
        "/api/v10/interactions/{}/{}/callback",
        interaction["id"].as_str().expect("id"),
        interaction["token"].as_str().expect("token")
    )
}

/// Where the bot edits, deletes or follows up the answer to `interaction`.
fn webhook_path(interaction: &Value, rest: &str) -> String {
    format!(
        "/api/v10/webhooks/{APP_ID}/{}{rest}",
        interaction["token"].as_str().expect("token")
    )
}

#[handler]
fn gateway_url(state: Data<&Arc<FakeState>>) -> poem::web::Json<Value> {
    poem::web::Json(json!({
        "url": format!("ws://127.0.0.1:{}/gateway", state.port),
        "shards": state.shard_count,
        "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
    }))
}

/// The `payload_json` part of a multipart body, else the body as JSON.
fn json_of(raw: &str) -> Value {
    if let Ok(value) = serde_json::from_str(raw) {
        return value;
    }
    raw.split("name=\"payload_json\"")
        .nth(1)
        .and_then(|part| part.split_once("\r\n\r\n"))
        .and_then(|(_, rest)| rest.split("\r\n--").next())
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or(Value::Null)
}

/// A message as Discord returns it for a webhook edit or follow-up.
fn message(id: u64, content: &Value) -> Value {
    json!({
        "id": id.to_string(), "channel_id": "77", "content": content.as_str().unwrap_or(""),
        "author": {"id": APP_ID, "username": "Keeper", "discriminator": "0", "global_name": null,
                   "avatar": null, "bot": true},
        "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "type": 0
    })
}

/// The application's commands: list, create or update by name, replace all,
/// edit and delete, as Discord does.
fn commands_api(state: &FakeState, method: &str, path: &str, body: &Value) -> Response {
    let json = |value: Value| {
        Response::builder()
            .content_type("application/json")
            .body(value.to_string())
    };
    let rest = path.split("/commands").nth(1).unwrap_or("");
    let guild = path
        .split("/guilds/")
        .nth(1)
        .and_then(|p| p.split('/').next())
        .map(str::to_owned);
    let scope = json!(guild);
    let mut commands = state.commands.lock().unwrap();
    let in_scope = |c: &Value| c["guild_id"] == scope;
    let complete = |mut c: Value, id: u64| {
        c["id"] = json!(id.to_string());
        c["application_id"] = json!(APP_ID);
        c["guild_id"] = scope.clone();
        c["version"] = json!("1");
        c["type"] = c.get("type").cloned().unwrap_or(json!(1));
        if c.get("default_member_permissions").is_none() {
            c["default_member_permissions"] = Value::Null;
        }
        c
    };
    match (method, rest.trim_start_matches('/')) {
        ("GET", "") => json(Value::Array(commands.iter().filter(|c| in_scope(c)).cloned().collect())),
        ("POST", "") => {
            let existing = commands.iter().position(|c| in_scope(c) && c["name"] == body["name"]);
            let id = match existing {
                Some(i) => commands.remove(i)["id"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                None => state.next_id.fetch_add(1, SeqCst),
            };
            let command = complete(body.clone(), id);
            commands.push(command.clone());
            json(command)
        }
        ("PUT", "") => {
            commands.retain(|c| !in_scope(c));
            let new: Vec<Value> = body
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|c| complete(c, state.next_id.fetch_add(1, SeqCst)))
                .collect();
            commands.extend(new.clone());
            json(Value::Array(new))
        }
        ("DELETE", id) => {
            commands.retain(|c| !(in_scope(c) && c["id"] == json!(id)));
            Response::builder().status(StatusCode::NO_CONTENT).finish()
        }
        (_, id) => match commands.iter_mut().find(|c| in_scope(c) && c["id"] == json!(id)) {
            Some(command) => {
                if let (Some(target), Some(changes)) = (command.as_object_mut(), body.as_object()) {
                    target.extend(changes.clone());
                }
                json(command.clone())
            }
            None => Response::builder().status(StatusCode::NOT_FOUND).body("{}"),
        },
    }
}

#[handler]
async fn record(req: &Request, Path(_rest): Path<String>, body: Body, state: Data<&Arc<FakeState>>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let body = json_of(&raw);
    let path = req.uri().path().to_owned();
    let method = req.method().to_string();
    state.requests.lock().unwrap().push(Recorded {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
        raw,
        at: Instant::now(),
    });
    if method == "GET" && path.starts_with("/cdn/") {
        match state.files.lock().unwrap().get(&path) {
            Some((content_type, bytes)) => Response::builder().content_type(content_type).body(bytes.clone()),
            None => Response::builder().status(StatusCode::NOT_FOUND).body("no such file"),
        }
    } else if path.ends_with("/callback") {
        Response::builder().status(StatusCode::NO_CONTENT).finish()
    } else if path.contains("/commands") {
        commands_api(&state, &method, &path, &body)
    } else if path.contains("/webhooks/") && method != "DELETE" {
        let id = state.next_id.fetch_add(1, SeqCst);
        Response::builder()
            .content_type("application/json")
            .body(message(id, &body["content"]).to_string())
    } else if method == "DELETE" {
        Response::builder().status(StatusCode::NO_CONTENT).finish()
    } else {
        Response::builder().content_type("application/json").body("{}")
    }
}

#[handler]
fn gateway(ws: WebSocket, state: Data<&Arc<FakeState>>) -> Response {
    if !state.accepting.load(SeqCst) {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body("outage");
    }
    let state = state.clone();
    ws.on_upgrade(move |socket| async move {
        let (mut tx, mut rx) = socket.split();
        let mut seq = 0u64;
        let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}});
        let _ = tx.send(Message::Text(hello.to_string())).await;
        // Which shard the session is: its IDENTIFY says, or a RESUME's session id.
        let (shard, first) = loop {
            match rx.next().await {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match frame["op"].as_u64() {
                        Some(2) => {
                            let shard = frame["d"]["shard"].clone();
                            state.identified.lock().unwrap().push(shard.clone());
                            break (shard[0].as_u64().unwrap_or(0), frame);
                        }
                        Some(6) => {
                            let session = frame["d"]["session_id"].as_str().unwrap_or("");
                            let shard = session.strip_prefix("session-").and_then(|n| n.parse().ok());
                            break (shard.unwrap_or(0), frame);
                        }
                        Some(1) => {
                            let _ = tx.send(Message::Text(json!({"op": 11}).to_string())).await;
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        };
        let Some(mut outbox) = state.outboxes.lock().unwrap().remove(&shard) else {
            return;
        };
        // READY (or RESUMED) for the frame that named the shard, then the session.
        let answer = |frame: &Value, seq: &mut u64| match frame["op"].as_u64() {
            Some(2) => {
                *seq += 1;
                let d = ready(state.port, shard, state.shard_count);
                Some(json!({"op": 0, "t": "READY", "s": *seq, "d": d}))
            }
            Some(6) => {
                *seq += 1;
                Some(json!({"op": 0, "t": "RESUMED", "s": *seq, "d": {}}))
            }
            Some(1) => Some(json!({"op": 11})),
            _ => None,
        };
        if let Some(reply) = answer(&first, &mut seq) {
            let _ = tx.send(Message::Text(reply.to_string())).await;
        }
        loop {
            tokio::select! {
                incoming = rx.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if let Some(reply) = answer(&frame, &mut seq) {
                            let _ = tx.send(Message::Text(reply.to_string())).await;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                () = state.kick.notified() => {
                    let _ = tx.send(Message::close_with(4000u16, "fake outage")).await;
                    break;
                }
                event = outbox.recv() => {
                    let Some((name, data)) = event else { break };
                    seq += 1;
                    let frame = json!({"op": 0, "t": name, "s": seq, "d": data});
                    let _ = tx.send(Message::Text(frame.to_string())).await;
                }
            }
        }
        state.outboxes.lock().unwrap().insert(shard, outbox);
    })
    .into_response()
}

fn ready(port: u16, shard: u64, count: u64) -> Value {
    json!({
        "v": 10,
        "user": {"id": APP_ID, "username": "Keeper", "discriminator": "0", "global_name": null,
                 "avatar": null, "bot": true},
        "guilds": [{"id": GUILD_ID, "unavailable": true}],
        "session_id": format!("session-{shard}"),
        "resume_gateway_url": format!("ws://127.0.0.1:{port}/gateway"),
        "application": {"id": APP_ID, "flags": 0},
        "shard": [shard, count]
    })
}

fn member() -> Value {
    json!({
        "user": {"id": USER_ID, "username": "explorer", "discriminator": "0",
                 "global_name": "Explorer Global", "avatar": null, "bot": false, "public_flags": 0},
        "nick": "Star Nick",
        "roles": [],
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "permissions": "0",
        "avatar": null
    })
}

/// An interaction as Discord sends it, with every field serenity requires.
fn interaction(id: u64, kind: u8, data: Value) -> Value {
    json!({
        "id": id.to_string(),
        "application_id": APP_ID,
        "type": kind,
        "data": data,
        "guild_id": GUILD_ID,
        "channel_id": "77",
        "member": member(),
        "token": format!("token-{id}"),
        "version": 1,
        "app_permissions": "0",
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": 8_388_608
    })
}

fn string_option(name: &str, value: &str) -> Value {
    json!({"name": name, "type": 3, "value": value})
}

fn command(id: u64, options: Vec<Value>) -> Value {
    interaction(
        id,
        2,
        json!({"id": "555", "name": "discovery-report", "type": 1, "options": options}),
    )
}

fn autocomplete(id: u64, mut options: Vec<Value>, focused: &str, typed: &str) -> Value {
    options.push(json!({"name": focused, "type": 3, "value": typed, "focused": true}));
    interaction(
        id,
        4,
        json!({"id": "555", "name": "discovery-report", "type": 1, "options": options}),
    )
}

fn modal_submit(id: u64, custom_id: &str, values: &[(&str, &str)]) -> Value {
    let rows: Vec<Value> = values
        .iter()
        .map(|(c, v)| json!({"type": 1, "components": [{"type": 4, "custom_id": c, "value": v}]}))
        .collect();
    interaction(id, 5, json!({"custom_id": custom_id, "components": rows}))
}

fn choices(callback: &Value) -> Vec<String> {
    assert_eq!(callback["type"], 8, "{callback}");
    callback["data"]["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| c["value"].as_str().expect("value").to_owned())
        .collect()
}

/// The modal's inputs as (custom_id, label, placeholder, max_length, style, required).
fn inputs(modal: &Value) -> Vec<(String, String, String, u64, u64, bool)> {
    modal["data"]["components"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            let c = &row["components"][0];
            (
                c["custom_id"].as_str().expect("custom_id").to_owned(),
                c["label"].as_str().expect("label").to_owned(),
                c["placeholder"].as_str().expect("placeholder").to_owned(),
                c["max_length"].as_u64().expect("max_length"),
                c["style"].as_u64().expect("style"),
                c["required"].as_bool().expect("required"),
            )
        })
        .collect()
}

/// Waits (a little) for the log reader to have seen `needle`.
fn wait_log(log: &Arc<Mutex<String>>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn discoveries(env: &Env) -> i64 {
    scalar_i64(&env.keeper, "SELECT COUNT(*) FROM discoveries").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_report_through_a_fake_discord() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    env.var("DISCORD_TOKEN", "fake-token")
        .var("DISCORD_GUILD_ID", GUILD_ID)
        .var("DISCORD_API_BASE", discord.base());
    let (mut child, port, log) = spawn_run(&env);

    // Registration in the guild, with the ten types as choices.
    let command_def = discord
        .wait_request(
            "POST",
            &format!("/api/v10/applications/{APP_ID}/guilds/{GUILD_ID}/commands"),
            &log,
        )
        .await;
    assert_eq!(command_def["name"], "discovery-report");
    let options = command_def["options"].as_array().expect("options");
    let type_choices: Vec<&str> = options[0]["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .map(|c| c["value"].as_str().expect("value"))
        .collect();
    assert_eq!(
        type_choices,
        ["🦴", "📜", "🏛️", "⚙️", "🦗", "💎", "🚀", "⚡", "🆕", "📖"]
    );
    assert_eq!(options[0]["choices"][5]["name"], "💎 Minerals & Resources");
    let names: Vec<&str> = options.iter().map(|o| o["name"].as_str().expect("name")).collect();
    assert_eq!(
        names,
        [
            "type",
            "system",
            "location",
            "coordinates",
            "evidence",
            "evidence_url",
            "condition",
            "time_period",
            "significance"
        ]
    );
    assert_eq!(options[1]["autocomplete"], true);
    assert_eq!(options[2]["autocomplete"], true);
    wait_log(&log, "🤖 Discord bot connected as Keeper");

    // /health knows the bot is online.
    let health = wait_online(port, true, &log).await;
    assert_eq!(health["bot_gateway"], "connected", "{health}");

    // Autocomplete: systems, then the chosen system's planets and moons.
    let systems = choices(
        &discord
            .interact(autocomplete(2001, vec![], "system", "ixi"), &log)
            .await,
    );
    assert_eq!(systems, ["Ixiezh HV"]);
    let places = choices(
        &discord
            .interact(
                autocomplete(2002, vec![string_option("system", "Ixiezh HV")], "location", "get"),
                &log,
            )
            .await,
    );
    assert_eq!(places, ["moon:Getre Beta"]);
    let all_systems = choices(&discord.interact(autocomplete(2003, vec![], "system", ""), &log).await);
    assert_eq!(all_systems.len(), 5, "{all_systems:?}");

    // The command opens the 💎 modal with the documented fields.
    let options = vec![
        string_option("type", "💎"),
        string_option("system", "Ixiezh HV"),
        string_option("location", "moon:Getre Beta"),
        string_option("coordinates", "0123:4567:89AB"),
    ];
    let modal = discord.interact(command(3001, options.clone()), &log).await;
    assert_eq!(modal["type"], 9, "{modal}");
    assert_eq!(modal["data"]["title"], "💎 Minerals & Resources");
    let custom_id = modal["data"]["custom_id"].as_str().expect("custom_id").to_owned();
    assert!(custom_id.chars().count() <= 100);
    let expected = [
        (
            "description",
            "📝 Discovery Description",
            "Describe the mineral/resource deposit. Where is it located?",
            1000,
            2,
            true,
        ),
        (
            "resource_type",
            "⛏️ Resource Type",
            "e.g., Activated Indium, Gold, Cobalt, Rare Earth, Exotic Crystals",
            200,
            1,
            false,
        ),
        (
            "deposit_richness",
            "💰 Deposit Size/Richness",
            "e.g., Small Vein, Large Deposit, S-Class Hotspot, Abundant Field",
            200,
            1,
            false,
        ),
        (
            "extraction_method",
            "🔨 Extraction Method",
            "e.g., Mining Laser, Mineral Extractor, Terrain Manipulator Required",
            200,
            1,
            false,
        ),
        (
            "economic_value",
            "💵 Economic Value/Market Demand",
            "e.g., High Value (+80%), Common, Rare Trade Good, Star System Specific",
            200,
            1,
            false,
        ),
    ];
    let got = inputs(&modal);
    assert_eq!(got.len(), 5);
    for (g, e) in got.iter().zip(expected) {
        assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str(), g.3, g.4, g.5), e);
    }
    // 📜 has a paragraph excerpt of 500.
    let logs = discord
        .interact(
            command(
                3002,
                vec![
                    string_option("type", "📜"),
                    string_option("system", "Ixiezh HV"),
                    string_option("location", "planet:Mineh L13 VH"),
                ],
            ),
            &log,
        )
        .await;
    assert_eq!(
        inputs(&logs)[1],
        (
            "key_excerpt".to_owned(),
            "📖 Key Excerpt/Quote".to_owned(),
            "Copy any interesting text from the log (if readable)".to_owned(),
            500,
            2,
            false
        )
    );

    // Submitting the form stores the report with the reporter from the interaction.
    assert_eq!(discoveries(&env).await, 0);
    let submitted = modal_submit(
        4001,
        &custom_id,
        &[
            ("description", "A rich vein of gold under the ice."),
            ("resource_type", "Gold"),
            ("deposit_richness", ""),
            ("extraction_method", ""),
            ("economic_value", "High"),
        ],
    );
    let reply = discord.interact(submitted.clone(), &log).await;
    assert_eq!(reply["type"], 4, "{reply}");
    let content = reply["data"]["content"].as_str().expect("content");
    assert!(content.starts_with("✅ Discovery archived! #1"), "{content}");
    assert_eq!(discoveries(&env).await, 1);
    let row = rows(
        &env.keeper,
        "SELECT user_id, username, guild_id, discovery_type, system_name, location, coordinates, metadata
         FROM discoveries",
    )
    .await;
    use sqlx::Row as _;
    let row = &row[0];
    assert_eq!(row.get::<String, _>("user_id"), USER_ID);
    assert_eq!(row.get::<String, _>("username"), "Star Nick");
    assert_eq!(row.get::<String, _>("guild_id"), GUILD_ID);
    assert_eq!(row.get::<String, _>("discovery_type"), "💎");
    assert_eq!(row.get::<String, _>("system_name"), "Ixiezh HV");
    assert_eq!(row.get::<String, _>("location"), "Getre Beta");
    assert_eq!(row.get::<String, _>("coordinates"), "0123:4567:89AB");
    let metadata: Value = serde_json::from_str(&row.get::<String, _>("metadata")).expect("metadata");
    assert_eq!(metadata["resource_type"], "Gold");
    assert_eq!(metadata["economic_value"], "High");

    // The worker was woken: the item syncs to VH-Database with the moon resolved.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, error) = queue_state(&env.keeper, 1).await;
        if status == "synced" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not synced: {status} {error:?}\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let haven = rows(
        &env.haven,
        "SELECT d.moon_id, d.discord_user_id, d.discord_guild_id FROM discoveries d
         JOIN keeper_sync_ledger l ON l.haven_discovery_id = d.id WHERE l.keeper_discovery_id = 1",
    )
    .await;
    assert_eq!(haven[0].get::<Option<i64>, _>("moon_id"), Some(6));
    assert_eq!(
        haven[0].get::<Option<String>, _>("discord_user_id").as_deref(),
        Some(USER_ID)
    );

    // Suggestions never fail the interaction: without VH-Database, no choices.
    let moved = env.dir.path().join("VH-Database.moved");
    std::fs::rename(&env.haven, &moved).expect("move VH-Database away");
    let none = choices(
        &discord
            .interact(autocomplete(2004, vec![], "system", "ixi"), &log)
            .await,
    );
    assert!(none.is_empty(), "{none:?}");
    std::fs::rename(&moved, &env.haven).expect("move VH-Database back");

    // Discord delivers the same interaction again (a resumed session
    // replays it): answered "archived" with the first id, stored once.
    let path = callback_path(&submitted);
    discord.send("INTERACTION_CREATE", submitted);
    let replay = discord.wait_nth_recorded(2, "POST", &path, &log).await.body;
    assert_eq!(replay["type"], 4, "{replay}");
    assert_eq!(replay["data"]["content"], "✅ Discovery archived! #1", "{replay}");
    assert_eq!(discoveries(&env).await, 1);

    // The same form cannot be submitted twice.
    let again = discord
        .interact(modal_submit(4002, &custom_id, &[("description", "again")]), &log)
        .await;
    assert!(
        again["data"]["content"].as_str().expect("content").contains("expired"),
        "{again}"
    );
    assert_eq!(again["data"]["flags"], 64);

    // A malformed location is refused before the form opens; nothing is written.
    let bad = discord
        .interact(
            command(
                5001,
                vec![
                    string_option("type", "💎"),
                    string_option("system", "Ixiezh HV"),
                    string_option("location", "Getre Beta"),
                ],
            ),
            &log,
        )
        .await;
    assert_eq!(bad["type"], 4, "{bad}");
    assert_eq!(bad["data"]["flags"], 64, "ephemeral");
    assert!(
        bad["data"]["content"]
            .as_str()
            .expect("content")
            .contains("location: expected planet:NAME, moon:NAME or space:NAME"),
        "{bad}"
    );
    // An unknown type (a crafted interaction) likewise.
    let unknown = discord
        .interact(
            command(
                5002,
                vec![
                    string_option("type", "🐉"),
                    string_option("system", "Ixiezh HV"),
                    string_option("location", "planet:X"),
                ],
            ),
            &log,
        )
        .await;
    assert!(
        unknown["data"]["content"]
            .as_str()
            .expect("content")
            .contains("discovery_type"),
        "{unknown}"
    );
    // A form whose values break the rules: the error names the field.
    let form = discord.interact(command(5003, options.clone()), &log).await;
    let form_id = form["data"]["custom_id"].as_str().expect("custom_id").to_owned();
    let refused = discord
        .interact(
            modal_submit(5004, &form_id, &[("description", "ok"), ("resource_type", "a\u{7}b")]),
            &log,
        )
        .await;
    let text = refused["data"]["content"].as_str().expect("content");
    assert!(text.contains("resource_type: control character U+0007"), "{text}");
    // A form field of another type (or a crafted reporter field) is refused.
    let form = discord.interact(command(5005, options), &log).await;
    let form_id = form["data"]["custom_id"].as_str().expect("custom_id").to_owned();
    let crafted = discord
        .interact(
            modal_submit(5006, &form_id, &[("description", "ok"), ("user_id", "1")]),
            &log,
        )
        .await;
    assert!(
        crafted["data"]["content"]
            .as_str()
            .expect("content")
            .contains("user_id"),
        "{crafted}"
    );
    assert_eq!(discoveries(&env).await, 1);
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM sync_queue").await, 1);

    // SIGTERM stops the bot with the rest, cleanly and in time.
    let status = stop(&mut child);
    assert!(status.success(), "{status}\n{}", log.lock().unwrap());
    wait_log(&log, "Discord bot disconnected");
}

#[test]
fn without_a_token_the_bot_does_not_run() {
    let env = Env::new();
    let (mut child, _port, log) = spawn_run(&env);
    wait_log(&log, "DISCORD_TOKEN is not set");
    let status = stop(&mut child);
    assert!(status.success(), "{status}\n{}", log.lock().unwrap());
}

/// Starts `keeper run` against `discord` (guild registration, the worker on
/// a long interval unless the test chose one) and waits until its command is
/// registered.
async fn start_bot(discord: &FakeDiscord, env: &mut Env) -> (std::process::Child, u16, Arc<Mutex<String>>) {
    if !env.vars.iter().any(|(k, _)| k == "SYNC_INTERVAL") {
        env.var("SYNC_INTERVAL", 3600);
    }
    env.var("DISCORD_TOKEN", "fake-token")
        .var("DISCORD_GUILD_ID", GUILD_ID)
        .var("DISCORD_API_BASE", discord.base());
    let (child, port, log) = spawn_run(env);
    wait_log(&log, "/discovery-report registered in the guild");
    (child, port, log)
}

fn lore_options(system: &str, location: &str) -> Vec<Value> {
    vec![
        string_option("type", "📖"),
        string_option("system", system),
        string_option("location", location),
    ]
}

/// Runs the command; returns the modal's `custom_id`.
async fn open_form(discord: &FakeDiscord, id: u64, options: Vec<Value>, log: &Arc<Mutex<String>>) -> String {
    let modal = discord.interact(command(id, options), log).await;
    assert_eq!(modal["type"], 9, "a modal: {modal}");
    modal["data"]["custom_id"].as_str().expect("custom_id").to_owned()
}

/// Waits until the bot has written the form behind `custom_id` to keeper.db.
async fn wait_form_row(env: &Env, custom_id: &str) {
    let nonce: i64 = custom_id
        .rsplit(':')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("nonce");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut conn = connect(&env.keeper).await;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keeper_bot_forms WHERE nonce = ?1")
            .bind(nonce)
            .fetch_one(&mut conn)
            .await
            .expect("count forms");
        if n == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "form {custom_id} never reached keeper.db");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The words a reporter finally sees for `interaction`: the `answer` itself,
/// or, when the bot deferred it (a save slower than its one-second
/// `DEFER_AFTER`, as on a loaded machine), the edit of the original message
/// that follows. Either is right; a test about the text must not depend on
/// which one the machine's speed chose.
async fn settled_text(discord: &FakeDiscord, interaction: &Value, answer: &Value, log: &Arc<Mutex<String>>) -> String {
    if answer["type"] == 5 {
        let edited = discord
            .wait_request("PATCH", &webhook_path(interaction, "/messages/@original"), log)
            .await;
        return edited["content"].as_str().expect("content").to_owned();
    }
    content(answer)
}

/// Submits the form `form` with `fields`; the text the reporter sees.
async fn submit_form(
    discord: &FakeDiscord,
    id: u64,
    form: &str,
    fields: &[(&str, &str)],
    log: &Arc<Mutex<String>>,
) -> String {
    let submit = modal_submit(id, form, fields);
    let answer = discord.interact(submit.clone(), log).await;
    settled_text(discord, &submit, &answer, log).await
}

fn content(answer: &Value) -> String {
    answer["data"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {answer}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_save_is_deferred_within_3s_and_refusals_give_the_text_back() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    let custom_id = open_form(&discord, 6001, lore_options("Oculi", "planet:Erren"), &log).await;
    wait_form_row(&env, &custom_id).await;

    // Another writer holds keeper.db: the save waits, the answer does not.
    let mut lock = connect(&env.keeper).await;
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .expect("lock keeper.db");
    let submit = modal_submit(
        6002,
        &custom_id,
        &[("description", "Written while keeper.db was busy.")],
    );
    let (answer, after) = discord.interact_timed(submit.clone(), &log).await;
    assert_eq!(answer["type"], 5, "a deferral: {answer}");
    assert!(
        after < Duration::from_secs(3),
        "the deferral came {after:?} after the submit"
    );
    assert_eq!(discoveries(&env).await, 0);
    sqlx::raw_sql("COMMIT")
        .execute(&mut lock)
        .await
        .expect("release keeper.db");
    let edited = discord
        .wait_request("PATCH", &webhook_path(&submit, "/messages/@original"), &log)
        .await;
    let text = edited["content"].as_str().expect("content");
    assert!(text.starts_with("✅ Discovery archived! #1"), "{text}");
    assert_eq!(discoveries(&env).await, 1);

    // A save that fails after the deferral: the text comes back privately,
    // as a file when it would not fit in a message, and the public
    // "thinking" line goes.
    let custom_id = open_form(&discord, 6003, lore_options("Oculi", "planet:Erren"), &log).await;
    wait_form_row(&env, &custom_id).await;
    sqlx::raw_sql(
        "BEGIN IMMEDIATE;
         CREATE TRIGGER refuse_reports BEFORE INSERT ON discoveries
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .execute(&mut lock)
    .await
    .expect("lock keeper.db");
    let story = format!("{}END-OF-STORY", "Once upon a time in Oculi. ".repeat(36));
    let long = [
        ("description", story.as_str()),
        ("story_type", &"J".repeat(200)),
        ("lore_connections", &"K".repeat(200)),
        ("creative_elements", &"L".repeat(200)),
        ("collaborative_work", &"M".repeat(200)),
    ];
    let submit = modal_submit(6004, &custom_id, &long);
    let (answer, after) = discord.interact_timed(submit.clone(), &log).await;
    assert_eq!(answer["type"], 5, "a deferral: {answer}");
    assert!(
        after < Duration::from_secs(3),
        "the deferral came {after:?} after the submit"
    );
    sqlx::raw_sql("COMMIT")
        .execute(&mut lock)
        .await
        .expect("release keeper.db");
    let followup = discord.wait_recorded("POST", &webhook_path(&submit, ""), &log).await;
    assert_eq!(followup.body["flags"], 64, "private: {}", followup.body);
    let text = followup.body["content"].as_str().expect("content");
    assert!(text.starts_with("❌ The archive could not save your report"), "{text}");
    assert!(text.contains("your-report.txt"), "{text}");
    assert!(text.chars().count() <= 2000);
    assert!(
        followup.raw.contains("filename=\"your-report.txt\""),
        "{}",
        followup.raw
    );
    assert!(followup.raw.contains("END-OF-STORY"), "the story is in the file");
    assert!(followup.raw.contains(&"M".repeat(200)), "every field is in the file");
    discord
        .wait_recorded("DELETE", &webhook_path(&submit, "/messages/@original"), &log)
        .await;

    // A quick refusal is the first answer itself, with the text quoted.
    let custom_id = open_form(&discord, 6005, lore_options("Oculi", "planet:Erren"), &log).await;
    let answer = discord
        .interact(
            modal_submit(6006, &custom_id, &[("description", "A short tale.")]),
            &log,
        )
        .await;
    assert_eq!(answer["type"], 4, "{answer}");
    assert_eq!(answer["data"]["flags"], 64);
    let text = content(&answer);
    assert!(text.contains("📝 Lore Entry/Story:\nA short tale."), "{text}");
    assert_eq!(discoveries(&env).await, 1);
    terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_survive_a_restart_and_an_expired_form_gives_the_text_back() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    let kept = open_form(&discord, 7001, lore_options("Oculi", "planet:Erren"), &log).await;
    let expiring = open_form(&discord, 7002, lore_options("Oculi", "planet:Erren"), &log).await;
    wait_form_row(&env, &kept).await;
    wait_form_row(&env, &expiring).await;
    terminate(&mut child);

    let discord = FakeDiscord::start().await;
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    let text = submit_form(
        &discord,
        7003,
        &kept,
        &[("description", "Kept across a restart.")],
        &log,
    )
    .await;
    assert!(text.starts_with("✅ Discovery archived! #1"), "{text}");

    exec(&env.keeper, "UPDATE keeper_bot_forms SET expires_at = 0").await;
    let answer = discord
        .interact(
            modal_submit(
                7004,
                &expiring,
                &[("description", "A long lore entry, typed with care.")],
            ),
            &log,
        )
        .await;
    let text = content(&answer);
    assert!(text.starts_with("⌛"), "{text}");
    assert!(text.contains("A long lore entry, typed with care."), "{text}");
    assert_eq!(answer["data"]["flags"], 64);
    assert_eq!(discoveries(&env).await, 1);
    terminate(&mut child);
}

async fn health(port: u16) -> Value {
    let url = format!("http://127.0.0.1:{port}/health");
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("health")
            .body_mut()
            .read_json::<Value>()
            .expect("json")
    })
    .await
    .expect("health thread")
}

async fn metrics(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .expect("text")
    })
    .await
    .expect("metrics thread")
}

/// Waits until `/health` says `bot_online` is `online`; returns the answer.
async fn wait_online(port: u16, online: bool, log: &Arc<Mutex<String>>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = health(port).await;
        if health["bot_online"] == online {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "bot_online never became {online}: {health}\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_online_follows_the_gateway_connection() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    let (mut child, port, log) = start_bot(&discord, &mut env).await;
    let health = wait_online(port, true, &log).await;
    assert_eq!(health["bot_gateway"], "connected", "{health}");
    let text = metrics(port).await;
    assert!(text.contains("keeper_bot_online 1\n"), "{text}");
    assert!(
        text.contains("keeper_bot_gateway_state{state=\"connected\"} 1\n"),
        "{text}"
    );

    // An outage: the connection drops and Discord refuses new ones.
    discord.state.accepting.store(false, SeqCst);
    discord.state.kick.notify_waiters();
    let health = wait_online(port, false, &log).await;
    let state = health["bot_gateway"].as_str().expect("bot_gateway");
    assert!(["disconnected", "connecting", "resuming"].contains(&state), "{health}");
    // Degraded, and only by the bot: the sync itself is fine.
    assert_eq!(health["status"], "degraded", "{health}");
    let problems: Vec<&str> = health["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["problem"].as_str())
        .collect();
    assert_eq!(
        problems,
        ["discord_gateway_down"],
        "the bot's outage is not the sync's: {health}"
    );
    let text = metrics(port).await;
    assert!(text.contains("keeper_bot_online 0\n"), "{text}");
    assert!(
        text.contains("keeper_bot_gateway_state{state=\"connected\"} 0\n"),
        "{text}"
    );

    // Discord is back: the bot reconnects and says so.
    discord.state.accepting.store(true, SeqCst);
    let health = wait_online(port, true, &log).await;
    assert_eq!(health["bot_gateway"], "connected", "{health}");
    terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_gateway_is_disabled() {
    let env = Env::new();
    let (mut child, port, _log) = spawn_run(&env);
    let health = health(port).await;
    assert_eq!(health["bot_gateway"], "disabled", "{health}");
    assert_eq!(health["bot_online"], false, "{health}");
    terminate(&mut child);
}

/// The old bot's commands in the same application: 19, in the guild and global.
fn old_bot_commands() -> Vec<Value> {
    let names = [
        "quick-discovery",
        "search-discoveries",
        "setup-channels",
        "discovery-stats",
        "mystery-tier",
        "pattern-analysis",
        "view-discovery",
        "my-discoveries",
        "leaderboard",
        "archive-export",
        "link-haven",
        "haven-status",
        "set-archive-channel",
        "tag-discovery",
        "report-pattern",
        "story-mode",
        "help",
        "about",
        "admin-tools",
    ];
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let guild = if i % 2 == 0 { json!(GUILD_ID) } else { Value::Null };
            json!({"id": (500 + i).to_string(), "application_id": APP_ID, "guild_id": guild, "version": "1",
                   "type": 1, "name": name, "description": "the old bot", "default_member_permissions": null})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_bots_commands_survive_and_unknown_interactions_get_an_answer() {
    let discord = FakeDiscord::with_commands(old_bot_commands()).await;
    let mut env = Env::new();
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    let commands = discord.commands();
    for old in old_bot_commands() {
        assert!(
            commands
                .iter()
                .any(|c| c["name"] == old["name"] && c["guild_id"] == old["guild_id"]),
            "{} vanished: {commands:#?}",
            old["name"]
        );
    }
    let ours: Vec<&Value> = commands.iter().filter(|c| c["name"] == "discovery-report").collect();
    assert_eq!(ours.len(), 1, "{commands:#?}");
    assert_eq!(ours[0]["guild_id"], GUILD_ID);
    assert!(
        !discord
            .requests()
            .iter()
            .any(|r| r.method == "PUT" || r.method == "DELETE"),
        "the command list was replaced or cut: {:#?}",
        discord.requests()
    );

    // A restart updates keeper's command in place, still leaving the rest.
    terminate(&mut child);
    let (mut child, _port, log2) = start_bot(&discord, &mut env).await;
    let commands = discord.commands();
    assert_eq!(commands.len(), 19 + 2, "the old bot's and keeper's two: {commands:#?}");
    drop(log);

    // The old bot's command, button and form get a short private answer.
    let old = discord
        .interact(
            interaction(8001, 2, json!({"id": "500", "name": "quick-discovery", "type": 1})),
            &log2,
        )
        .await;
    assert_eq!(old["type"], 4, "{old}");
    assert_eq!(old["data"]["flags"], 64);
    assert!(content(&old).contains("/quick-discovery"), "{old}");
    let mut click = interaction(8002, 3, json!({"custom_id": "old-bot:approve:7", "component_type": 2}));
    click["message"] = message(42, &json!("the old bot's message"));
    let button = discord.interact(click, &log2).await;
    assert_eq!(button["type"], 4, "{button}");
    assert_eq!(button["data"]["flags"], 64);
    let form = discord
        .interact(modal_submit(8003, "old-bot-form", &[("text", "x")]), &log2)
        .await;
    assert_eq!(form["data"]["flags"], 64, "{form}");
    assert_eq!(discoveries(&env).await, 0);
    terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_ignore_case_and_accents_and_unknown_places_are_said() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    exec(
        &env.haven,
        "UPDATE systems SET name = 'Eisvåld' WHERE name = 'Tenex[VH]'",
    )
    .await;
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;

    let systems = choices(
        &discord
            .interact(autocomplete(9001, vec![], "system", "oculi"), &log)
            .await,
    );
    assert_eq!(systems, ["Oculi"]);
    let systems = choices(
        &discord
            .interact(autocomplete(9002, vec![], "system", "EISVALD"), &log)
            .await,
    );
    assert_eq!(systems, ["Eisvåld"]);
    let places = choices(
        &discord
            .interact(
                autocomplete(9003, vec![string_option("system", "oculi")], "location", "ERR"),
                &log,
            )
            .await,
    );
    assert_eq!(places, ["planet:Erren"]);

    // A known system and place, in another letter case: no warning.
    let form = open_form(&discord, 9004, lore_options("oculi", "planet:erren"), &log).await;
    let text = submit_form(&discord, 9005, &form, &[("description", "Placed.")], &log).await;
    assert!(text.starts_with("✅ Discovery archived! #1"), "{text}");
    assert!(!text.contains("⚠️"), "{text}");

    // An unknown system: archived, said to be off the map, with the closest names.
    let form = open_form(&discord, 9006, lore_options("Ocli", "planet:Erren"), &log).await;
    let text = submit_form(&discord, 9007, &form, &[("description", "Typo.")], &log).await;
    assert!(text.starts_with("✅ Discovery archived! #2"), "{text}");
    assert!(
        text.contains("⚠️ The system \"Ocli\" is not on the map: your report will be archived without a map position. Did you mean Oculi?"),
        "{text}"
    );
    // A place of another system.
    let form = open_form(&discord, 9008, lore_options("Oculi", "planet:Erena"), &log).await;
    let text = submit_form(&discord, 9009, &form, &[("description", "Wrong planet.")], &log).await;
    assert!(text.starts_with("✅ Discovery archived! #3"), "{text}");
    assert!(
        text.contains("Oculi has no planet or moon \"Erena\" on the map") && text.contains("Did you mean planet:Erren"),
        "{text}"
    );
    assert_eq!(discoveries(&env).await, 3);
    terminate(&mut child);
}

/// Waits for the first request matching `method` and `path` whose body's
/// `content` contains `needle`; returns that body.
async fn wait_content(
    discord: &FakeDiscord,
    method: &str,
    path: &str,
    needle: &str,
    log: &Arc<Mutex<String>>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(r) = discord.requests().into_iter().find(|r| {
            r.method == method && r.path == path && r.body["content"].as_str().is_some_and(|c| c.contains(needle))
        }) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "no {method} {path} saying {needle:?}; requests: {:#?}\nlog:\n{}",
            discord.requests(),
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that `edited` is report #1's confirmation, edited to say it is on
/// the map with the VH-Database id the ledger gave it.
async fn assert_first_report_on_the_map(env: &Env, edited: &Value) {
    let haven_id = scalar_i64(
        &env.haven,
        "SELECT haven_discovery_id FROM keeper_sync_ledger WHERE keeper_discovery_id = 1",
    )
    .await;
    let text = edited["content"].as_str().expect("content");
    assert!(text.starts_with("✅ Discovery archived! #1"), "{text}");
    assert!(
        text.ends_with(&format!("🗺️ #1 is on the map (VH-Database #{haven_id}).")),
        "{text}"
    );
}

/// VH-Database refuses every report ("refused by the test") until the
/// trigger `refuse_reports` is dropped.
async fn refuse_reports(env: &Env) {
    exec(
        &env.haven,
        "CREATE TRIGGER refuse_reports BEFORE INSERT ON discoveries
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporters_and_moderators_hear_what_became_of_a_report() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    env.var("KEEPER_ALERT_CHANNEL_ID", "31337")
        .var("KEEPER_SLOW_SYNC_SECS", 0)
        .var("SYNC_MAX_ATTEMPTS", 2)
        .var("SYNC_RETRY_BASE", 2)
        .var("SYNC_INTERVAL", 1);
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;

    // Synced: the confirmation itself says it is on the map, with the VH id.
    let form = open_form(&discord, 9101, lore_options("Oculi", "planet:Erren"), &log).await;
    let submit = modal_submit(9102, &form, &[("description", "Placed.")]);
    discord.interact(submit.clone(), &log).await;
    let edited = wait_content(
        &discord,
        "PATCH",
        &webhook_path(&submit, "/messages/@original"),
        "is on the map",
        &log,
    )
    .await;
    assert_first_report_on_the_map(&env, &edited).await;

    // VH-Database refuses writes: the reporter hears it waits, then that it
    // failed; the moderators' channel hears both.
    refuse_reports(&env).await;
    let form = open_form(&discord, 9103, lore_options("Oculi", "planet:Erren"), &log).await;
    let submit = modal_submit(9104, &form, &[("description", "Refused.")]);
    discord.interact(submit.clone(), &log).await;
    let waiting = wait_content(&discord, "POST", &webhook_path(&submit, ""), "⏳ #2", &log).await;
    assert_eq!(waiting["flags"], 64, "{waiting}");
    let failed = wait_content(&discord, "POST", &webhook_path(&submit, ""), "❌ #2", &log).await;
    assert_eq!(failed["flags"], 64, "{failed}");
    let alerts = "/api/v10/channels/31337/messages";
    wait_content(&discord, "POST", alerts, "⏳ #2", &log).await;
    let alert = wait_content(&discord, "POST", alerts, "❌ #2", &log).await;
    assert!(
        alert["content"]
            .as_str()
            .expect("content")
            .contains("refused by the test"),
        "{alert}"
    );
    assert_eq!(queue_state(&env.keeper, 2).await.0, "max_retries_exceeded");
    // Told once: the row is kept for a retry, marked told, and a later
    // report's news (which needs the follower to go round again) comes with
    // nothing more about #2.
    wait_for_value(
        &env.keeper,
        "SELECT COUNT(*) FROM keeper_bot_notices WHERE discovery_id = 2 AND told_failed = 1",
        1,
        Duration::from_secs(30),
    )
    .await;
    exec(&env.haven, "DROP TRIGGER refuse_reports").await;
    let form = open_form(&discord, 9105, lore_options("Oculi", "planet:Erren"), &log).await;
    let later = modal_submit(9106, &form, &[("description", "Placed later.")]);
    discord.interact(later.clone(), &log).await;
    wait_content(
        &discord,
        "PATCH",
        &webhook_path(&later, "/messages/@original"),
        "🗺️ #3 is on the map",
        &log,
    )
    .await;
    let about_2: Vec<Recorded> = discord
        .requests()
        .into_iter()
        .filter(|r| r.body["content"].as_str().is_some_and(|c| c.contains("#2 ")))
        .collect();
    assert_eq!(
        about_2.len(),
        4,
        "⏳ and ❌, each to the reporter and the moderators, once: {about_2:#?}"
    );
    terminate(&mut child);
}

/// The requests whose `content` contains `needle`, to `path` (any method).
fn saying(discord: &FakeDiscord, path: &str, needle: &str) -> Vec<Recorded> {
    discord
        .requests()
        .into_iter()
        .filter(|r| r.path == path && r.body["content"].as_str().is_some_and(|c| c.contains(needle)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_retried_after_it_failed_is_put_on_the_map_and_its_reporter_told() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    // One failed attempt is the last: `max_retries_exceeded` at once.
    env.var("KEEPER_ALERT_CHANNEL_ID", "31337")
        .var("SYNC_MAX_ATTEMPTS", 1)
        .var("SYNC_INTERVAL", 1);
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    refuse_reports(&env).await;
    let form = open_form(&discord, 9401, lore_options("Oculi", "planet:Erren"), &log).await;
    let submit = modal_submit(9402, &form, &[("description", "Refused, then retried.")]);
    discord.interact(submit.clone(), &log).await;
    let followups = webhook_path(&submit, "");
    let original = webhook_path(&submit, "/messages/@original");
    let alerts = "/api/v10/channels/31337/messages";
    let failed = wait_content(&discord, "POST", &followups, "❌ #1", &log).await;
    assert_eq!(failed["flags"], 64, "{failed}");
    wait_content(&discord, "POST", alerts, "❌ #1", &log).await;
    let told = "SELECT COUNT(*) FROM keeper_bot_notices WHERE discovery_id = 1 AND told_failed = 1";
    wait_for_value(&env.keeper, told, 1, Duration::from_secs(30)).await;

    // Still failed: told once, however many rounds pass. A second report's
    // failure, told by a later round, brings nothing more about #1.
    let form = open_form(&discord, 9403, lore_options("Oculi", "planet:Erren"), &log).await;
    let second = modal_submit(9404, &form, &[("description", "Refused too.")]);
    discord.interact(second.clone(), &log).await;
    wait_content(&discord, "POST", &webhook_path(&second, ""), "❌ #2", &log).await;
    assert_eq!(saying(&discord, &followups, "❌ #1").len(), 1);

    // A moderator retries it from Discord while VH-Database still refuses:
    // a new failure, told again, once, to the reporter and the moderators.
    let text = moderator_presses(&discord, 9405, "keeper-sync-status:retry:item:1", &log).await;
    assert!(text.starts_with("🔁 Queue item 1 will be tried again now."), "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while saying(&discord, &followups, "❌ #1").len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second failure of #1 was not told; requests: {:#?}\nlog:\n{}",
            discord.requests(),
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_value(&env.keeper, told, 1, Duration::from_secs(30)).await;

    // Fixed, and retried from the command line: it syncs, and the
    // reporter's confirmation says it is on the map, with its VH id.
    exec(&env.haven, "DROP TRIGGER refuse_reports").await;
    env.ok(&["retry", "1"]);
    let edited = wait_content(&discord, "PATCH", &original, "is on the map", &log).await;
    assert_first_report_on_the_map(&env, &edited).await;
    // Done with #1: its row is gone; #2, never retried, keeps its own.
    wait_for_value(
        &env.keeper,
        "SELECT COUNT(*) FROM keeper_bot_notices WHERE discovery_id = 1",
        0,
        Duration::from_secs(30),
    )
    .await;
    let still = "SELECT COUNT(*) FROM keeper_bot_notices WHERE discovery_id = 2 AND told_failed = 1";
    assert_eq!(scalar_i64(&env.keeper, still).await, 1);
    // Each failure told once, to each; the moderators hear bad news only
    // (README: waiting or failed), so nothing about the sync.
    assert_eq!(saying(&discord, &followups, "❌ #1").len(), 2);
    assert_eq!(saying(&discord, alerts, "❌ #1").len(), 2);
    assert!(saying(&discord, alerts, "#1 is on the map").is_empty());
    assert_eq!(
        saying(&discord, &followups, "❌ #2").len(),
        0,
        "#2's news on #1's interaction"
    );
    terminate(&mut child);
}

/// The Manage Server permission, as Discord sends a member's permissions.
const MANAGE_GUILD: &str = "32";

/// `interaction` from a member with `permissions` (a bit set, as text).
fn with_permissions(mut interaction: Value, permissions: &str) -> Value {
    interaction["member"]["permissions"] = json!(permissions);
    interaction
}

fn sync_status(id: u64, permissions: &str) -> Value {
    let command = interaction(id, 2, json!({"id": "556", "name": "sync-status", "type": 1}));
    with_permissions(command, permissions)
}

/// A press of the button `custom_id` on an ephemeral message.
fn press(id: u64, custom_id: &str, permissions: &str) -> Value {
    let mut click = interaction(id, 3, json!({"custom_id": custom_id, "component_type": 2}));
    click["message"] = message(id, &json!("📊 Sync queue"));
    with_permissions(click, permissions)
}

/// A moderator presses the button `custom_id`: the press is acknowledged
/// at once and the message edited; returns the edited text.
async fn moderator_presses(discord: &FakeDiscord, id: u64, custom_id: &str, log: &Arc<Mutex<String>>) -> String {
    let click = press(id, custom_id, MANAGE_GUILD);
    let ack = discord.interact(click.clone(), log).await;
    assert_eq!(ack["type"], 6, "acknowledged, to be edited: {ack}");
    let updated = discord
        .wait_request("PATCH", &webhook_path(&click, "/messages/@original"), log)
        .await;
    updated["content"].as_str().expect("content").to_owned()
}

/// The `custom_id`s of the buttons in a message body.
fn buttons(body: &Value) -> Vec<String> {
    body["components"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|b| b["custom_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderators_see_the_queue_and_retry_from_discord() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    for i in 1..=4 {
        env.submit("fossil", "Oculi", "planet:Erren", &format!("Report {i}"), &[]);
    }
    // What the worker leaves behind: two out of attempts on a full disk, one
    // on an unreachable VH-Database, one waiting out a lock's backoff. (Not
    // `schema` or `mapping`: a starting keeper retries those by itself, for
    // its plugin may be a new one.)
    exec(
        &env.keeper,
        "UPDATE sync_queue SET sync_status = 'max_retries_exceeded', sync_attempts = 10, error_class = 'full',
             sync_error = 'database or disk is full', last_sync_attempt = datetime('now')
         WHERE discovery_id IN (1, 2);
         UPDATE sync_queue SET sync_status = 'max_retries_exceeded', sync_attempts = 10,
             error_class = 'unavailable', sync_error = 'VH-Database not accessible',
             last_sync_attempt = datetime('now', '-1 hour')
         WHERE discovery_id = 4;
         UPDATE sync_queue SET sync_status = 'pending', sync_attempts = 2, error_class = 'locked',
             sync_error = 'database is locked', next_retry_after = datetime('now', '+1 day')
         WHERE discovery_id = 3;",
    )
    .await;
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    wait_log(&log, "/sync-status registered in the guild");
    let registered = discord
        .commands()
        .into_iter()
        .find(|c| c["name"] == "sync-status")
        .expect("/sync-status registered");
    assert_eq!(registered["default_member_permissions"], MANAGE_GUILD, "{registered}");
    assert_eq!(registered["dm_permission"], false, "{registered}");

    // Someone without Manage Server: refused, privately.
    let refused = discord.interact(sync_status(9201, "0"), &log).await;
    assert_eq!(refused["type"], 4, "{refused}");
    assert_eq!(refused["data"]["flags"], 64, "{refused}");
    assert!(content(&refused).starts_with("🔒"), "{refused}");

    // A moderator: a private deferral, then the status with its buttons.
    let command = sync_status(9202, MANAGE_GUILD);
    let deferred = discord.interact(command.clone(), &log).await;
    assert_eq!(deferred["type"], 5, "{deferred}");
    assert_eq!(deferred["data"]["flags"], 64, "ephemeral: {deferred}");
    let status = discord
        .wait_request("PATCH", &webhook_path(&command, "/messages/@original"), &log)
        .await;
    let text = status["content"].as_str().expect("content");
    assert!(text.contains("1 pending, 0 syncing, 0 synced, 3 failed"), "{text}");
    for line in [
        "• #1 (queue 1): `full`, 10 attempt(s) — `database or disk is full`",
        "• #4 (queue 4): `unavailable`, 10 attempt(s)",
        "• #3 (queue 3): `locked`, 2 attempt(s), next try <t:",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert_eq!(
        buttons(&status),
        [
            "keeper-sync-status:retry:class:full",
            "keeper-sync-status:retry:class:locked",
            "keeper-sync-status:retry:class:unavailable",
            // Failed, the most recent first (1 and 2 failed together: the
            // later id first), then waiting.
            "keeper-sync-status:retry:item:2",
            "keeper-sync-status:retry:item:1",
            "keeper-sync-status:retry:item:4",
            "keeper-sync-status:retry:item:3",
        ]
    );

    // A press from someone without the permission changes nothing.
    let sneaky = discord
        .interact(press(9203, "keeper-sync-status:retry:item:1", "0"), &log)
        .await;
    assert_eq!(sneaky["type"], 4, "{sneaky}");
    assert_eq!(sneaky["data"]["flags"], 64, "{sneaky}");
    assert!(content(&sneaky).starts_with("🔒"), "{sneaky}");
    assert_eq!(queue_state(&env.keeper, 1).await.0, "max_retries_exceeded");

    // A moderator retries one item: it syncs, and the status says so.
    let text = moderator_presses(&discord, 9204, "keeper-sync-status:retry:item:1", &log).await;
    assert!(text.starts_with("🔁 Queue item 1 will be tried again now."), "{text}");
    let synced = "SELECT COUNT(*) FROM sync_queue WHERE discovery_id = 1 AND sync_status = 'synced'";
    wait_for_value(&env.keeper, synced, 1, Duration::from_secs(30)).await;
    assert_eq!(queue_state(&env.keeper, 2).await.0, "max_retries_exceeded");

    // By class: the other full-disk failure, and only it.
    let text = moderator_presses(&discord, 9205, "keeper-sync-status:retry:class:full", &log).await;
    assert!(
        text.starts_with("🔁 1 item(s) whose last failure was `full` will be tried again now."),
        "{text}"
    );
    let synced = "SELECT COUNT(*) FROM sync_queue WHERE discovery_id = 2 AND sync_status = 'synced'";
    wait_for_value(&env.keeper, synced, 1, Duration::from_secs(30)).await;
    assert_eq!(queue_state(&env.keeper, 4).await.0, "max_retries_exceeded");
    assert_eq!(
        queue_state(&env.keeper, 3).await,
        ("pending".to_owned(), 2, Some("database is locked".to_owned()))
    );

    // A stale button: the item is synced already, and the answer says so.
    let text = moderator_presses(&discord, 9206, "keeper-sync-status:retry:item:1", &log).await;
    assert!(
        text.starts_with("ℹ️ Nothing to retry: queue item 1 is already synced."),
        "{text}"
    );
    assert!(text.contains("1 pending, 0 syncing, 2 synced, 1 failed"), "{text}");
    terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn news_after_the_interaction_expired_goes_to_the_channel_with_a_mention() {
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    // Every interaction counts as expired: what happens 15 minutes on.
    env.var("DISCORD_INTERACTION_SECS", 0);
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    let form = open_form(&discord, 9301, lore_options("Oculi", "planet:Erren"), &log).await;
    let submit = modal_submit(9302, &form, &[("description", "Placed, told late.")]);
    discord.interact(submit.clone(), &log).await;
    let posted = wait_content(
        &discord,
        "POST",
        "/api/v10/channels/77/messages",
        "🗺️ #1 is on the map",
        &log,
    )
    .await;
    let text = posted["content"].as_str().expect("content");
    assert!(
        text.starts_with(&format!("<@{USER_ID}> 🗺️ #1 is on the map (VH-Database #")),
        "{text}"
    );
    // The mention pings the reporter and no one else.
    assert_eq!(posted["allowed_mentions"]["users"], json!([USER_ID]), "{posted}");
    assert_eq!(posted["allowed_mentions"]["parse"], json!([]), "{posted}");
    // The expired interaction is not used.
    let edits: Vec<Recorded> = discord
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&webhook_path(&submit, "")))
        .collect();
    assert!(edits.is_empty(), "{edits:#?}");
    terminate(&mut child);
}

/// The options of a 📖 report with an image attached at `url`.
fn lore_with_attachment(command_id: u64, url: &str) -> Value {
    let mut options = lore_options("Oculi", "planet:Erren");
    options.push(json!({"name": "evidence", "type": 11, "value": "8800"}));
    let mut interaction = command(command_id, options);
    interaction["data"]["resolved"] = json!({"attachments": {"8800": {
        "id": "8800", "filename": "evidence.png", "size": 10, "url": url, "proxy_url": url,
        "content_type": "image/png"}}});
    interaction
}

/// Reports one 📖 discovery with an image attached at `url`; returns the
/// confirmation's text.
async fn report_with_image(discord: &FakeDiscord, id: u64, url: &str, log: &Arc<Mutex<String>>) -> String {
    let modal = discord.interact(lore_with_attachment(id, url), log).await;
    assert_eq!(modal["type"], 9, "a modal: {modal}");
    let form = modal["data"]["custom_id"].as_str().expect("custom_id").to_owned();
    submit_form(discord, id + 1, &form, &[("description", "With a picture.")], log).await
}

async fn evidence_url_of(env: &Env, discovery_id: i64) -> String {
    let mut conn = connect(&env.keeper).await;
    sqlx::query_scalar("SELECT evidence_url FROM discoveries WHERE id = ?1")
        .bind(discovery_id)
        .fetch_one(&mut conn)
        .await
        .expect("evidence_url")
}

/// A GET on the sync API: (status, content type, body).
async fn api_get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let url = format!("http://127.0.0.1:{port}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = agent.get(&url).call().expect("the sync API answers");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.body_mut().read_to_vec().expect("body");
        (response.status().as_u16(), content_type, body)
    })
    .await
    .expect("API thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attached_images_are_kept_and_served_and_a_failed_download_keeps_the_report() {
    use sha2::Digest as _;
    let discord = FakeDiscord::start().await;
    let png: Vec<u8> = [&b"\x89PNG\r\n\x1a\n"[..], b"\0\0\0\rIHDR a small picture"].concat();
    let id = hex::encode(sha2::Sha256::digest(&png));
    let shot = discord.serve_file("/cdn/attachments/1/shot.png", "image/png", png.clone());
    let mut env = Env::new();
    env.var("SYNC_API_PUBLIC_URL", "https://keeper.example/sync/")
        .var("KEEPER_EVIDENCE_MAX_BYTES", 1024);
    let (mut child, port, log) = start_bot(&discord, &mut env).await;

    // Kept: the report links to the sync API, which serves the image.
    let text = report_with_image(&discord, 9501, &shot, &log).await;
    assert!(text.starts_with("✅ Discovery archived! #1"), "{text}");
    assert!(!text.contains("⚠️"), "{text}");
    let public = format!("https://keeper.example/sync/evidence/{id}");
    assert_eq!(evidence_url_of(&env, 1).await, public);
    let (status, content_type, body) = api_get(port, &format!("/evidence/{id}")).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(body, png);
    let (status, _, body) = api_get(port, &format!("/evidence/{}", "0".repeat(64))).await;
    assert_eq!(status, 404);
    let error: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(error["error"], "not_found", "{error}");
    // …and VH-Database's photo_url is that lasting link.
    let synced = "SELECT COUNT(*) FROM sync_queue WHERE discovery_id = 1 AND sync_status = 'synced'";
    wait_for_value(&env.keeper, synced, 1, Duration::from_secs(30)).await;
    let photo: Vec<sqlx::sqlite::SqliteRow> = rows(
        &env.haven,
        "SELECT d.photo_url FROM discoveries d
         JOIN keeper_sync_ledger l ON l.haven_discovery_id = d.id WHERE l.keeper_discovery_id = 1",
    )
    .await;
    use sqlx::Row as _;
    assert_eq!(photo[0].get::<Option<String>, _>("photo_url"), Some(public));

    // Not kept: the report is archived with Discord's link, and the reporter
    // hears why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let unreachable = format!(
        "http://{}/cdn/attachments/9/shot.png",
        closed.local_addr().expect("addr")
    );
    drop(closed);
    let big = [&png[..], &[0u8; 1024][..]].concat();
    let cases = [
        (
            discord.serve_file("/cdn/attachments/2/notes.png", "text/plain", b"a text".to_vec()),
            "the file is not an image (it is served as \"text/plain\")",
        ),
        (
            discord.serve_file("/cdn/attachments/3/page.png", "image/png", b"<html></html>".to_vec()),
            "the file's content is not a PNG, JPEG, GIF or WebP image",
        ),
        (
            discord.serve_file("/cdn/attachments/4/big.png", "image/png", big),
            "the file is larger than 1024 bytes, the most the archive keeps",
        ),
        (
            format!("{}/cdn/attachments/5/gone.png", discord.base()),
            "Discord's copy could not be fetched (HTTP 404)",
        ),
        (unreachable, "Discord's copy could not be fetched ("),
    ];
    for (n, (url, reason)) in cases.iter().enumerate() {
        let discovery_id = i64::try_from(n).expect("small") + 2;
        let text = report_with_image(&discord, 9510 + 2 * n as u64, url, &log).await;
        assert!(
            text.starts_with(&format!("✅ Discovery archived! #{discovery_id}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("⚠️ Your image was not kept by the archive: {reason}")),
            "{reason:?} not in {text}"
        );
        assert!(
            text.contains("links to Discord's copy, which expires in about a day"),
            "{text}"
        );
        assert_eq!(&evidence_url_of(&env, discovery_id).await, url);
    }
    assert_eq!(scalar_i64(&env.keeper, "SELECT COUNT(*) FROM keeper_evidence").await, 1);
    terminate(&mut child);

    // Without SYNC_API_PUBLIC_URL nothing is fetched: the report keeps
    // Discord's link, and the log says it will expire.
    env.vars.retain(|(k, _)| k != "SYNC_API_PUBLIC_URL");
    let fetched = || {
        discord
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/cdn/"))
            .count()
    };
    let before = fetched();
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;
    let text = report_with_image(&discord, 9530, &shot, &log).await;
    assert!(text.starts_with("✅ Discovery archived! #7"), "{text}");
    assert!(!text.contains("⚠️"), "{text}");
    assert_eq!(evidence_url_of(&env, 7).await, shot);
    wait_log(
        &log,
        "SYNC_API_PUBLIC_URL is not set: the report keeps Discord's link to its image",
    );
    assert_eq!(fetched(), before, "nothing fetched without a public URL");
    terminate(&mut child);
}

/// Waits until `sql` on the PostgreSQL database `url` answers `want`.
fn wait_psql(url: &str, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = common::postgres::psql(url, sql);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} answered {got:?}, not {want:?}, within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bot on the PostgreSQL store (`KEEPER_DATABASE_URL`): its forms,
/// reports and notices live there (no keeper.db is made); a synced report's
/// confirmation says it is on the map; a failed one is told once, and when
/// it is retried (the trigger clears the mark) and syncs, its reporter hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_runs_on_the_postgresql_store() {
    let url = common::postgres::fresh_database("bot");
    let discord = FakeDiscord::start().await;
    let mut env = Env::new();
    env.var("KEEPER_DATABASE_URL", &url)
        .var("KEEPER_ALERT_CHANNEL_ID", "31337")
        .var("SYNC_MAX_ATTEMPTS", 1)
        .var("SYNC_INTERVAL", 1);
    let (mut child, _port, log) = start_bot(&discord, &mut env).await;

    let form = open_form(&discord, 9901, lore_options("Oculi", "planet:Erren"), &log).await;
    let nonce = form.rsplit(':').next().expect("nonce");
    wait_psql(
        &url,
        &format!("SELECT COUNT(*) FROM keeper_bot_forms WHERE nonce = {nonce}"),
        "1",
    );
    let submit = modal_submit(9902, &form, &[("description", "Placed from PostgreSQL.")]);
    discord.interact(submit.clone(), &log).await;
    let edited = wait_content(
        &discord,
        "PATCH",
        &webhook_path(&submit, "/messages/@original"),
        "is on the map",
        &log,
    )
    .await;
    assert_first_report_on_the_map(&env, &edited).await;
    assert_eq!(
        common::postgres::psql(
            &url,
            "SELECT COUNT(*) FROM discoveries WHERE description = 'Placed from PostgreSQL.'"
        ),
        "1"
    );
    assert_eq!(
        common::postgres::psql(&url, "SELECT COUNT(*) FROM keeper_bot_forms"),
        "0",
        "the form was taken"
    );

    refuse_reports(&env).await;
    let form = open_form(&discord, 9903, lore_options("Oculi", "planet:Erren"), &log).await;
    let refused = modal_submit(9904, &form, &[("description", "Refused, then retried.")]);
    discord.interact(refused.clone(), &log).await;
    let followups = webhook_path(&refused, "");
    wait_content(&discord, "POST", &followups, "❌ #2", &log).await;
    wait_content(&discord, "POST", "/api/v10/channels/31337/messages", "❌ #2", &log).await;
    wait_psql(
        &url,
        "SELECT COUNT(*) FROM keeper_bot_notices WHERE discovery_id = 2 AND told_failed",
        "1",
    );

    exec(&env.haven, "DROP TRIGGER refuse_reports").await;
    env.ok(&["retry", "2"]);
    wait_content(
        &discord,
        "PATCH",
        &webhook_path(&refused, "/messages/@original"),
        "🗺️ #2 is on the map",
        &log,
    )
    .await;
    wait_psql(&url, "SELECT COUNT(*) FROM keeper_bot_notices", "0");
    assert_eq!(saying(&discord, &followups, "❌ #2").len(), 1, "told once");
    assert!(!env.keeper.exists(), "a keeper.db was made beside the PostgreSQL store");
    terminate(&mut child);
}

/// Two hosts with one token split the gateway: `keeper run` with
/// `DISCORD_SHARDS=0` and with `=1`, both of `DISCORD_SHARD_COUNT=2`. Each
/// IDENTIFYs as its own shard, and a report made through interactions on a
/// shard is taken by the host that runs that shard, into its own keeper.db.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_each_run_their_own_shard_and_answer_its_interactions() {
    let discord = FakeDiscord::with_shards(2).await;
    let mut hosts = Vec::new();
    for shard in 0..2 {
        let mut env = Env::new();
        env.var("DISCORD_TOKEN", "fake-token")
            .var("DISCORD_GUILD_ID", GUILD_ID)
            .var("DISCORD_API_BASE", discord.base())
            .var("DISCORD_SHARDS", shard)
            .var("DISCORD_SHARD_COUNT", 2);
        let (child, _port, log) = spawn_run(&env);
        hosts.push((env, child, log));
    }
    for (_, _, log) in &hosts {
        wait_log(log, "🤖 Discord bot connected as Keeper");
    }
    let mut identified: Vec<String> = discord.identified().iter().map(Value::to_string).collect();
    identified.sort();
    assert_eq!(
        identified,
        ["[0,2]", "[1,2]"],
        "one IDENTIFY per shard, each with its own shard"
    );

    for (shard, (env, _, log)) in hosts.iter().enumerate() {
        let id = 5000 + 10 * shard as u64;
        let options = vec![
            string_option("type", "💎"),
            string_option("system", "Ixiezh HV"),
            string_option("location", "moon:Getre Beta"),
        ];
        let modal = discord.interact_on(shard, command(id, options), log).await;
        assert_eq!(modal["type"], 9, "{modal}");
        let custom_id = modal["data"]["custom_id"].as_str().expect("custom_id").to_owned();
        let description = format!("reported through shard {shard}");
        let reply = discord
            .interact_on(
                shard,
                modal_submit(id + 1, &custom_id, &[("description", &description)]),
                log,
            )
            .await;
        let content = reply["data"]["content"].as_str().unwrap_or_default();
        assert!(
            content.starts_with("✅ Discovery archived! #1 "),
            "shard {shard}: {reply}"
        );
        let stored = query_i64(
            &env.keeper,
            &format!("SELECT COUNT(*) FROM discoveries WHERE description = '{description}'"),
        )
        .await;
        assert_eq!(stored, 1, "the host running shard {shard} took its report");
        assert_eq!(discoveries(env).await, 1, "and only that one");
    }
    for (_, child, _) in &mut hosts {
        assert!(stop(child).success());
    }
}

/// Shard settings that cannot work stop `keeper run` at start-up, naming
/// the variable, before keeper.db is made.
#[test]
fn bad_shard_settings_are_refused_at_start_up_naming_the_variable() {
    for (shards, count, variable, says) in [
        (
            Some("2"),
            Some("2"),
            "DISCORD_SHARDS",
            "shard 2 does not exist with DISCORD_SHARD_COUNT=2",
        ),
        (Some("0-4"), Some("4"), "DISCORD_SHARDS", "shard 4 does not exist"),
        (Some("1-0"), Some("2"), "DISCORD_SHARDS", "backwards"),
        (Some("one"), Some("2"), "DISCORD_SHARDS", "is not a shard number"),
        (Some("1"), None, "DISCORD_SHARDS", "needs DISCORD_SHARD_COUNT"),
        (None, Some("0"), "DISCORD_SHARD_COUNT", "0 is not in 1.."),
    ] {
        let mut env = Env::new();
        env.var("DISCORD_TOKEN", "fake-token")
            .var("DISCORD_API_BASE", "http://127.0.0.1:1");
        if let Some(shards) = shards {
            env.var("DISCORD_SHARDS", shards);
        }
        if let Some(count) = count {
            env.var("DISCORD_SHARD_COUNT", count);
        }
        let out = env.run(&["run"]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{shards:?} of {count:?} accepted: {err}");
        assert!(
            err.contains(&format!("error: {variable}")) && err.contains(says),
            "{shards:?} of {count:?}: {err}"
        );
        assert!(!env.keeper.exists(), "keeper.db made by a refused start-up");
    }
}
