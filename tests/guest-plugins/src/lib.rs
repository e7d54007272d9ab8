//! Test plugins for the host's plugin tests; see Cargo.toml for the
//! behaviour each feature selects. Everything but `wrong-world` implements
//! `keeper:mapper` (the current version; `contract-1-0` the first, 1.0.0,
//! kept in wit-1.0.0/, `contract-1-1` the next, in wit-1.1.0/; the
//! `*-needs` features its `mapper-with-limits` world) by calling the default
//! mapping (`mapper-guest` as a library) and then doing the one thing its
//! feature asks.

#[cfg(all(target_arch = "wasm32", not(feature = "wrong-world")))]
mod mapper {
    #[cfg(not(any(
        feature = "contract-1-0",
        feature = "contract-1-1",
        feature = "small-needs",
        feature = "big-needs",
        feature = "by-position",
        feature = "by-position-disagrees"
    )))]
    wit_bindgen::generate!({ path: "../../mapper-guest/wit", world: "mapper" });
    #[cfg(any(feature = "by-position", feature = "by-position-disagrees"))]
    wit_bindgen::generate!({ path: "../../mapper-guest/wit", world: "mapper-by-position" });
    #[cfg(any(feature = "small-needs", feature = "big-needs"))]
    wit_bindgen::generate!({ path: "../../mapper-guest/wit", world: "mapper-with-limits" });
    #[cfg(feature = "contract-1-0")]
    wit_bindgen::generate!({ path: "wit-1.0.0", world: "mapper" });
    #[cfg(feature = "contract-1-1")]
    wit_bindgen::generate!({ path: "wit-1.1.0", world: "mapper" });

    use keeper::mapper::{lookup, types};

    /// What this build does instead of (or on top of) the default mapping.
    #[derive(Clone, Copy, PartialEq)]
    enum Misbehaviour {
        Loop,
        Alloc,
        Panic,
        Oversized,
    }

    const NAME: &str = if cfg!(feature = "loop") {
        "test-loop"
    } else if cfg!(feature = "alloc") {
        "test-alloc"
    } else if cfg!(feature = "panic") {
        "test-panic"
    } else if cfg!(feature = "unknown-column") {
        "test-unknown-column"
    } else if cfg!(feature = "wrong-type") {
        "test-wrong-type"
    } else if cfg!(feature = "oversized") {
        "test-oversized"
    } else if cfg!(feature = "upper") {
        "test-upper"
    } else if cfg!(feature = "lenient") {
        "test-lenient"
    } else if cfg!(feature = "trapdoor") {
        "test-trapdoor"
    } else if cfg!(feature = "probe-file") {
        "test-probe-file"
    } else if cfg!(feature = "probe-env") {
        "test-probe-env"
    } else if cfg!(feature = "probe-socket") {
        "test-probe-socket"
    } else if cfg!(feature = "probe-clock") {
        "test-probe-clock"
    } else if cfg!(feature = "probe-random") {
        "test-probe-random"
    } else if cfg!(feature = "contract-1-0") {
        "test-contract-1-0"
    } else if cfg!(feature = "contract-1-1") {
        "test-contract-1-1"
    } else if cfg!(feature = "small-needs") {
        "test-small-needs"
    } else if cfg!(feature = "big-needs") {
        "test-big-needs"
    } else if cfg!(feature = "by-position") {
        "test-by-position"
    } else if cfg!(feature = "by-position-disagrees") {
        "test-by-position-disagrees"
    } else {
        "test-default"
    };

    const VERSION: &str = if cfg!(feature = "upper") {
        "1.1.0"
    } else if cfg!(feature = "lenient") {
        "1.2.0"
    } else {
        "0.0.1"
    };

    fn misbehaviour(description: &str) -> Option<Misbehaviour> {
        let always = if cfg!(feature = "loop") {
            Some(Misbehaviour::Loop)
        } else if cfg!(feature = "alloc") {
            Some(Misbehaviour::Alloc)
        } else if cfg!(feature = "panic") {
            Some(Misbehaviour::Panic)
        } else if cfg!(feature = "oversized") {
            Some(Misbehaviour::Oversized)
        } else {
            None
        };
        if always.is_some()
            || !cfg!(any(
                feature = "trapdoor",
                feature = "small-needs",
                feature = "by-position"
            ))
        {
            return always;
        }
        [
            ("[loop]", Misbehaviour::Loop),
            ("[alloc]", Misbehaviour::Alloc),
            ("[panic]", Misbehaviour::Panic),
            ("[oversized]", Misbehaviour::Oversized),
        ]
        .into_iter()
        .find(|(marker, _)| description.contains(marker))
        .map(|(_, m)| m)
    }

    struct TestPlugin;

    #[cfg(any(feature = "by-position", feature = "by-position-disagrees"))]
    thread_local! {
        /// The last `input-columns`.
        static INPUT_COLUMNS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    impl Guest for TestPlugin {
        fn info() -> PluginInfo {
            PluginInfo {
                name: NAME.to_owned(),
                version: VERSION.to_owned(),
            }
        }

        /// `small-needs`: far less than the default ceilings (32 MiB,
        /// 100 ms), and enough for the default mapping. `big-needs`: more
        /// memory than the default ceiling.
        #[cfg(any(feature = "small-needs", feature = "big-needs"))]
        fn requested_limits() -> types::PluginLimits {
            if cfg!(feature = "small-needs") {
                types::PluginLimits {
                    memory_mib: Some(4),
                    timeout_ms: Some(50),
                }
            } else {
                types::PluginLimits {
                    memory_mib: Some(64),
                    timeout_ms: None,
                }
            }
        }

        /// By position: the row is put back together from the last input
        /// columns and mapped by `map`, and its columns found in the default
        /// mapping's output columns.
        #[cfg(any(feature = "by-position", feature = "by-position-disagrees"))]
        fn output_columns() -> Vec<String> {
            mapper_guest::OUTPUT_COLUMNS
                .iter()
                .map(|&name| name.to_owned())
                .collect()
        }

        #[cfg(any(feature = "by-position", feature = "by-position-disagrees"))]
        fn input_columns(names: Vec<String>) {
            INPUT_COLUMNS.with_borrow_mut(|columns| *columns = names);
        }

        #[cfg(any(feature = "by-position", feature = "by-position-disagrees"))]
        fn map_values(values: Vec<types::Value>) -> Result<MappedCells, MappingError> {
            let row: Row = INPUT_COLUMNS.with_borrow(|names| {
                names
                    .iter()
                    .zip(values)
                    .map(|(name, value)| types::Column {
                        name: name.clone(),
                        value,
                    })
                    .collect()
            });
            let bad_cell = row.iter().any(|column| {
                column.name == "description"
                    && matches!(&column.value, types::Value::Text(text) if text.contains("[bad-cell]"))
            });
            let mapped = <TestPlugin as Guest>::map(row)?;
            let mut cells: Vec<types::Cell> = mapped
                .row
                .into_iter()
                .filter_map(|column| {
                    let position = mapper_guest::OUTPUT_COLUMNS
                        .iter()
                        .position(|&name| name == column.name)?;
                    Some(types::Cell {
                        column: u32::try_from(position).ok()?,
                        value: column.value,
                    })
                })
                .collect();
            if bad_cell {
                cells.push(types::Cell {
                    column: 9_999,
                    value: types::Value::Null,
                });
            }
            let mut warnings = mapped.warnings;
            if cfg!(feature = "by-position-disagrees") {
                warnings.push("only by position".to_owned());
            }
            Ok(MappedCells { cells, warnings })
        }

        fn map(row: Row) -> Result<Mapped, MappingError> {
            let mut columns: Vec<(String, mapper_guest::Value)> =
                row.into_iter().map(|c| (c.name, from_wit(c.value))).collect();
            let description = columns
                .iter()
                .find_map(|(name, value)| match (name.as_str(), value) {
                    ("description", mapper_guest::Value::Text(text)) => Some(text.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let misbehaviour = misbehaviour(&description);
            match misbehaviour {
                Some(Misbehaviour::Loop) => {
                    let mut n = 0u64;
                    loop {
                        n = std::hint::black_box(n.wrapping_add(1));
                    }
                }
                Some(Misbehaviour::Alloc) => {
                    // Capacity only: growing memory is the point, not filling it.
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(std::hint::black_box(Vec::with_capacity(4 << 20)));
                    }
                }
                Some(Misbehaviour::Panic) => panic!("test plugin panics on purpose"),
                _ => {}
            }

            let mut warnings = Vec::new();
            let mapped = match mapper_guest::map_row(&columns, &HostLookup) {
                Err(e) if cfg!(feature = "lenient") && e.field.as_deref() == Some("metadata") => {
                    warnings.push(format!("metadata ignored: {}", e.message));
                    for (name, value) in columns.iter_mut() {
                        if name == "metadata" {
                            *value = mapper_guest::Value::Null;
                        }
                    }
                    mapper_guest::map_row(&columns, &HostLookup)
                }
                other => other,
            }
            .map_err(|e| MappingError {
                field: e.field,
                message: e.message,
            })?;
            warnings.extend(mapped.warnings);
            warnings.extend(crate::probe::run(&description));

            let mut out: Vec<types::Column> = mapped
                .row
                .into_iter()
                .map(|(name, value)| types::Column {
                    name: name.name().to_owned(),
                    value: to_wit(value),
                })
                .collect();
            for column in out.iter_mut() {
                match column.name.as_str() {
                    "discovered_by" if cfg!(feature = "upper") => {
                        if let types::Value::Text(text) = &column.value {
                            column.value = types::Value::Text(text.to_uppercase());
                        }
                    }
                    "description" if cfg!(feature = "wrong-type") => column.value = types::Value::Integer(42),
                    "description" if misbehaviour == Some(Misbehaviour::Oversized) => {
                        column.value = types::Value::Text("x".repeat(2 << 20));
                    }
                    _ => {}
                }
            }
            if cfg!(feature = "unknown-column") {
                out.push(types::Column {
                    name: "no_such_column".to_owned(),
                    value: types::Value::Text("surprise".to_owned()),
                });
            }
            Ok(Mapped { row: out, warnings })
        }
    }

    struct HostLookup;

    impl mapper_guest::Lookup for HostLookup {
        fn find_system(&self, name: &str) -> Option<String> {
            lookup::find_system(name)
        }

        fn find_planet(&self, system_id: &str, name: &str) -> Option<mapper_guest::Body> {
            lookup::find_planet(system_id, name).map(from_wit_body)
        }

        fn find_moon(&self, system_id: &str, name: &str) -> Option<mapper_guest::Body> {
            lookup::find_moon(system_id, name).map(from_wit_body)
        }
    }

    fn from_wit_body(body: lookup::Body) -> mapper_guest::Body {
        mapper_guest::Body {
            id: body.id,
            planet_id: body.planet_id,
            name: body.name,
        }
    }

    fn from_wit(value: types::Value) -> mapper_guest::Value {
        match value {
            types::Value::Null => mapper_guest::Value::Null,
            types::Value::Integer(n) => mapper_guest::Value::Integer(n),
            types::Value::Real(n) => mapper_guest::Value::Real(n),
            types::Value::Text(t) => mapper_guest::Value::Text(t),
        }
    }

    fn to_wit(value: mapper_guest::Value) -> types::Value {
        match value {
            mapper_guest::Value::Null => types::Value::Null,
            mapper_guest::Value::Integer(n) => types::Value::Integer(n),
            mapper_guest::Value::Real(n) => types::Value::Real(n),
            mapper_guest::Value::Text(t) => types::Value::Text(t),
        }
    }

    export!(TestPlugin);
}

/// What a probe plugin saw when it tried a capability, as one warning line.
#[cfg(all(target_arch = "wasm32", not(feature = "wrong-world")))]
mod probe {
    /// The probe of this build (none for the other features).
    pub fn run(description: &str) -> Option<String> {
        if cfg!(feature = "probe-file") {
            Some(file(description))
        } else if cfg!(feature = "probe-env") {
            Some(env())
        } else if cfg!(feature = "probe-socket") {
            Some(socket(description))
        } else if cfg!(feature = "probe-clock") {
            Some(clock())
        } else if cfg!(feature = "probe-random") {
            Some(random())
        } else {
            None
        }
    }

    fn outcome<T>(result: std::io::Result<T>, ok: impl FnOnce(T) -> String) -> String {
        match result {
            Ok(value) => ok(value),
            Err(e) => format!("{:?}", e.kind()),
        }
    }

    /// The description names a file the host can read.
    fn file(description: &str) -> String {
        let path = description.trim_start_matches("read ");
        let read = outcome(std::fs::read(path), |bytes| format!("read {} bytes", bytes.len()));
        let listed = outcome(std::fs::read_dir("/"), |entries| format!("{} entries", entries.count()));
        let cwd = outcome(std::env::current_dir(), |dir| dir.display().to_string());
        format!("probe file: read {read}; list / {listed}; current dir {cwd}")
    }

    fn env() -> String {
        let secret = match std::env::var("KEEPER_PROBE_SECRET") {
            Ok(value) => format!("read {value:?}"),
            Err(e) => format!("{e:?}"),
        };
        format!(
            "probe env: {} variables, {} arguments, KEEPER_PROBE_SECRET {secret}",
            std::env::vars_os().count(),
            std::env::args_os().count()
        )
    }

    /// The description names an address the test listens on.
    fn socket(description: &str) -> String {
        use std::net::ToSocketAddrs;
        let address = description.trim_start_matches("connect ");
        let connect = match address.parse::<std::net::SocketAddr>() {
            Ok(address) => outcome(std::net::TcpStream::connect(address), |_| "connected".to_owned()),
            Err(_) => "no address".to_owned(),
        };
        let udp = outcome(std::net::UdpSocket::bind("0.0.0.0:0"), |_| "bound".to_owned());
        // The error kind of a failed lookup is not stable across Rust
        // versions ("Uncategorized"): only whether it answered.
        let resolve = match ("localhost", 80).to_socket_addrs() {
            Ok(addrs) => format!("{} addresses", addrs.count()),
            Err(_) => "failed".to_owned(),
        };
        format!("probe socket: connect {connect}; udp bind {udp}; resolve localhost {resolve}")
    }

    fn clock() -> String {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{} ns after 1970", d.as_nanos()))
            .unwrap_or_else(|e| format!("{} ns before 1970", e.duration().as_nanos()));
        let start = std::time::Instant::now();
        let mut n = 0u64;
        for i in 0..1_000_000u64 {
            n = std::hint::black_box(n.wrapping_add(i));
        }
        let elapsed = start.elapsed().as_nanos();
        format!("probe clock: wall {wall}; monotonic {elapsed} ns over a million steps")
    }

    #[cfg(feature = "probe-random")]
    fn random() -> String {
        let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let secure = hex(wasip2::random::random::get_random_bytes(8));
        let insecure = hex(wasip2::random::insecure::get_insecure_random_bytes(8));
        format!("probe random: secure {secure}; insecure {insecure}")
    }

    #[cfg(not(feature = "probe-random"))]
    fn random() -> String {
        unreachable!("only the probe-random build asks for randomness")
    }
}

/// A well-formed component of a world the host does not know.
#[cfg(all(target_arch = "wasm32", feature = "wrong-world"))]
mod other_world {
    wit_bindgen::generate!({
        inline: "package other:greeter@0.1.0;
                 world greeter {
                     export greet: func(name: string) -> string;
                 }",
    });

    struct Greeter;

    impl Guest for Greeter {
        fn greet(name: String) -> String {
            format!("hello, {name}")
        }
    }

    export!(Greeter);
}
