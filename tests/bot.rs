//! The Discord bot end to end: the real `keeper run` against a fake Discord
//! on 127.0.0.1 (HTTP API and gateway, via the testing knob
//! `DISCORD_API_BASE`), on temporary copies of real database files.
//!
//! The fake speaks just enough of Discord for serenity 0.12.5: `GET /gateway`,
//! HELLO / IDENTIFY / READY, heartbeat ACKs, interaction callbacks answered
//! with 204, and it records every HTTP request so the test can look at the
//! command registration, the modal and the replies.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
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
    body: Value,
}

struct FakeState {
    port: u16,
    requests: Mutex<Vec<Recorded>>,
    /// Dispatch events (name, data) for the connected gateway session.
    outbox: Mutex<Option<mpsc::UnboundedReceiver<(String, Value)>>>,
}

/// A fake Discord: serves until the test ends.
struct FakeDiscord {
    state: Arc<FakeState>,
    events: mpsc::UnboundedSender<(String, Value)>,
}

impl FakeDiscord {
    async fn start() -> FakeDiscord {
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.expect("bind");
        let port = acceptor.local_addr()[0].as_socket_addr().expect("tcp").port();
        let (events, outbox) = mpsc::unbounded_channel();
        let state = Arc::new(FakeState {
            port,
            requests: Mutex::new(Vec::new()),
            outbox: Mutex::new(Some(outbox)),
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
        self.events.send((event.to_owned(), data)).expect("gateway task alive");
    }

    /// Waits for a request matching `method` and `path`; returns its body.
    async fn wait_request(&self, method: &str, path: &str, log: &Arc<Mutex<String>>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self
                .state
                .requests
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.method == method && r.path == path)
            {
                return r.body.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "no {method} {path}; requests: {:#?}\nlog:\n{}",
                    self.state.requests.lock().unwrap(),
                    log.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends an interaction and waits for the bot's callback; returns its body.
    async fn interact(&self, interaction: Value, log: &Arc<Mutex<String>>) -> Value {
        let path = format!(
            "/api/v10/interactions/{}/{}/callback",
            interaction["id"].as_str().expect("id"),
            interaction["token"].as_str().expect("token")
        );
        self.send("INTERACTION_CREATE", interaction);
        self.wait_request("POST", &path, log).await
    }
}

#[handler]
fn gateway_url(state: Data<&Arc<FakeState>>) -> poem::web::Json<Value> {
    poem::web::Json(json!({
        "url": format!("ws://127.0.0.1:{}/gateway", state.port),
        "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
    }))
}

#[handler]
async fn record(req: &Request, Path(_rest): Path<String>, body: Body, state: Data<&Arc<FakeState>>) -> Response {
    let bytes = body.into_vec().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = req.uri().path().to_owned();
    state.requests.lock().unwrap().push(Recorded {
        method: req.method().to_string(),
        path: path.clone(),
        body,
    });
    if path.ends_with("/callback") {
        Response::builder().status(poem::http::StatusCode::NO_CONTENT).finish()
    } else if path.ends_with("/commands") {
        Response::builder().content_type("application/json").body("[]")
    } else {
        Response::builder().content_type("application/json").body("{}")
    }
}

#[handler]
fn gateway(ws: WebSocket, state: Data<&Arc<FakeState>>) -> impl IntoResponse {
    let state = state.clone();
    ws.on_upgrade(move |socket| async move {
        let Some(mut outbox) = state.outbox.lock().unwrap().take() else {
            return;
        };
        let (mut tx, mut rx) = socket.split();
        let mut seq = 0u64;
        let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}});
        let _ = tx.send(Message::Text(hello.to_string())).await;
        loop {
            tokio::select! {
                incoming = rx.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let reply = match frame["op"].as_u64() {
                            Some(2) => {
                                seq += 1;
                                Some(json!({"op": 0, "t": "READY", "s": seq, "d": ready(state.port)}))
                            }
                            Some(1) => Some(json!({"op": 11})),
                            _ => None,
                        };
                        if let Some(reply) = reply {
                            let _ = tx.send(Message::Text(reply.to_string())).await;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                event = outbox.recv() => {
                    let Some((name, data)) = event else { break };
                    seq += 1;
                    let frame = json!({"op": 0, "t": name, "s": seq, "d": data});
                    let _ = tx.send(Message::Text(frame.to_string())).await;
                }
            }
        }
        *state.outbox.lock().unwrap() = Some(outbox);
    })
}

fn ready(port: u16) -> Value {
    json!({
        "v": 10,
        "user": {"id": APP_ID, "username": "Keeper", "discriminator": "0", "global_name": null,
                 "avatar": null, "bot": true},
        "guilds": [{"id": GUILD_ID, "unavailable": true}],
        "session_id": "session-1",
        "resume_gateway_url": format!("ws://127.0.0.1:{port}/gateway"),
        "application": {"id": APP_ID, "flags": 0},
        "shard": [0, 1]
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
    let registered = discord
        .wait_request(
            "PUT",
            &format!("/api/v10/applications/{APP_ID}/guilds/{GUILD_ID}/commands"),
            &log,
        )
        .await;
    let command_def = &registered[0];
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
    let health: Value = ureq::get(&format!("http://127.0.0.1:{port}/health"))
        .call()
        .expect("health")
        .body_mut()
        .read_json()
        .expect("json");
    assert_eq!(health["bot_online"], true, "{health}");

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
    let reply = discord
        .interact(
            modal_submit(
                4001,
                &custom_id,
                &[
                    ("description", "A rich vein of gold under the ice."),
                    ("resource_type", "Gold"),
                    ("deposit_richness", ""),
                    ("extraction_method", ""),
                    ("economic_value", "High"),
                ],
            ),
            &log,
        )
        .await;
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

    // SIGTERM stops the bot with the rest.
    terminate(&mut child);
    wait_log(&log, "Discord bot disconnected");
}

#[test]
fn without_a_token_the_bot_does_not_run() {
    let env = Env::new();
    let (mut child, _port, log) = spawn_run(&env);
    std::thread::sleep(Duration::from_millis(300));
    terminate(&mut child);
    wait_log(&log, "DISCORD_TOKEN is not set");
}
