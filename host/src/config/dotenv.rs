//! The environment as keeper reads it: the process's variables, the `.env`
//! files the old bot read, and the old bot's names for keeper's variables.
//!
//! The old bot read `.env` with python-dotenv, so this reads it the same way
//! (unquoted values are literal: `C:\Users\…` stays as written), from the
//! working folder and, when keeper runs inside the old bot's `src/` folder,
//! from the folder above it, where the old bot kept it. Values are written
//! into the process environment before the command line is parsed, so each
//! flag falls back to its variable as usual; what came from where is kept
//! so that a bad value can be traced back to its line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The old bot's names for keeper's variables: (old name, keeper's name),
/// in the order they are tried. Keeper's own name wins when both are set.
pub const ALIASES: &[(&str, &str)] = &[
    ("BOT_TOKEN", "DISCORD_TOKEN"),
    ("DISCORD_BOT_TOKEN", "DISCORD_TOKEN"),
    ("GUILD_ID", "DISCORD_GUILD_ID"),
    ("DATABASE_PATH", "KEEPER_DB_PATH"),
];

/// Where a variable's value came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The `.env` file, or `None` for the environment keeper was started in.
    pub file: Option<PathBuf>,
    /// The old bot's name it was written under, when it was not keeper's own.
    pub written_as: Option<&'static str>,
}

/// Something to say once logging is up (the environment is read before it).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    Read(PathBuf),
    Unreadable {
        file: PathBuf,
        error: String,
    },
    Unparsable {
        file: PathBuf,
        line: usize,
        reason: String,
    },
    Alias {
        alias: &'static str,
        name: &'static str,
        file: Option<PathBuf>,
    },
    Shadowed {
        alias: &'static str,
        name: &'static str,
    },
}

/// What was read, from where; built once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Every variable set by keeper's start-up or by the caller, by name.
    sources: BTreeMap<String, Source>,
    notes: Vec<Note>,
}

/// A `.env` file's entries in order, `(name, value)`.
type Entries = Vec<(String, String)>;

/// What loading changes in the process environment.
#[derive(Debug, Default, PartialEq, Eq)]
struct Changes {
    set: Vec<(String, String)>,
    unset: Vec<String>,
}

impl Environment {
    /// Reads the `.env` files, resolves the old bot's names and drops empty
    /// values of `known` variables (empty means unset), then writes the
    /// result into the process environment. `known` pairs each variable
    /// with its flag: a variable whose flag is on the command line is
    /// dropped too, since the flag wins (clap would still check the
    /// variable's value of a global flag in the sub-command).
    ///
    /// # Safety
    /// Changes the process environment: call it before any other thread
    /// exists (first thing in `main`, before the async runtime starts).
    pub unsafe fn load(known: &[(String, String)]) -> Environment {
        let argv: Vec<String> = std::env::args_os()
            .filter_map(|a| a.into_string().ok())
            .take_while(|a| a != "--")
            .collect();
        let overridden: Vec<&str> = known
            .iter()
            .filter(|(_, flag)| argv.iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))))
            .map(|(name, _)| name.as_str())
            .collect();
        let known: Vec<&str> = known.iter().map(|(name, _)| name.as_str()).collect();
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let process: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let mut notes = Vec::new();
        let mut files = Vec::new();
        for path in dotenv_files(&cwd) {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let (entries, problems) = parse_file(&text, |name| lookup(&process, &files, name));
                    notes.push(Note::Read(path.clone()));
                    notes.extend(problems.into_iter().map(|(line, reason)| Note::Unparsable {
                        file: path.clone(),
                        line,
                        reason,
                    }));
                    files.push((path, entries));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => notes.push(Note::Unreadable {
                    file: path,
                    error: e.to_string(),
                }),
            }
        }
        let (mut environment, mut changes) = resolve(&process, &files, &known);
        changes.set.retain(|(name, _)| !overridden.contains(&name.as_str()));
        changes.unset.extend(overridden.iter().map(|name| (*name).to_owned()));
        notes.append(&mut environment.notes);
        environment.notes = notes;
        for name in &changes.unset {
            // SAFETY: the caller guarantees no other thread exists.
            unsafe { std::env::remove_var(name) };
        }
        for (name, value) in &changes.set {
            // SAFETY: as above.
            unsafe { std::env::set_var(name, value) };
        }
        environment
    }

    /// Logs what loading did: files read, lines skipped, old names used.
    pub fn log(&self) {
        for note in &self.notes {
            match note {
                Note::Read(file) => tracing::debug!(file = %file.display(), "settings read from .env"),
                Note::Unreadable { file, error } => {
                    tracing::warn!(file = %file.display(), %error, ".env cannot be read; it was ignored")
                }
                Note::Unparsable { file, line, reason } => tracing::warn!(
                    file = %file.display(),
                    line,
                    %reason,
                    ".env has a line that cannot be parsed; it was ignored"
                ),
                Note::Alias { alias, name, file } => tracing::info!(
                    old = alias,
                    new = name,
                    file = %file.as_deref().map_or_else(|| "the environment".into(), |f| f.display().to_string()),
                    "{alias} is the old bot's name for {name}: read as {name} (rename it when the old bot is retired)"
                ),
                Note::Shadowed { alias, name } => {
                    tracing::warn!(
                        old = alias,
                        new = name,
                        "{alias} is ignored: {name} is set too, and wins"
                    )
                }
            }
        }
    }

    /// Where `name`'s value came from, for an error message: e.g.
    /// `DISCORD_GUILD_ID (written GUILD_ID in /srv/bot/.env)`.
    pub fn describe(&self, name: &str) -> String {
        match self.sources.get(name) {
            None => name.to_owned(),
            Some(source) => {
                let place = match &source.file {
                    Some(file) => format!("in {}", file.display()),
                    None => "in the environment".to_owned(),
                };
                match source.written_as {
                    Some(alias) => format!("{name} (written {alias} {place})"),
                    None => format!("{name} ({place})"),
                }
            }
        }
    }

    /// The source of a variable, if keeper's start-up saw it set.
    pub fn source(&self, name: &str) -> Option<&Source> {
        self.sources.get(name)
    }
}

/// The `.env` files read, most important first: the working folder's, then,
/// in the old bot's `src/` folder, the one above it.
fn dotenv_files(cwd: &Path) -> Vec<PathBuf> {
    let mut files = vec![cwd.join(".env")];
    if cwd.file_name().is_some_and(|n| n == "src")
        && let Some(parent) = cwd.parent()
    {
        files.push(parent.join(".env"));
    }
    files
}

/// A variable for `${NAME}` in a `.env` value: the environment first, then
/// the files read so far (python-dotenv's order).
fn lookup(process: &[(String, String)], files: &[(PathBuf, Entries)], name: &str) -> Option<String> {
    process
        .iter()
        .chain(files.iter().flat_map(|(_, entries)| entries))
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.clone())
}

/// Decides every variable's value and source. Precedence: the environment
/// before `.env` files, the working folder's file before the one above, and
/// at each level keeper's own name before the old bot's.
fn resolve(process: &[(String, String)], files: &[(PathBuf, Entries)], known: &[&str]) -> (Environment, Changes) {
    let mut environment = Environment::default();
    let mut changes = Changes::default();
    // (value, rank): rank 0 is the environment, then each file in order.
    let mut values: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for (name, value) in process {
        if !value.is_empty() {
            values.insert(name, (value, 0));
            environment.sources.insert(name.clone(), Source::default());
        } else if known.contains(&name.as_str()) || ALIASES.iter().any(|(alias, _)| alias == name) {
            changes.unset.push(name.clone());
        }
    }
    for (rank, (file, entries)) in files.iter().enumerate() {
        for (name, value) in entries {
            if value.is_empty() || values.contains_key(name.as_str()) {
                continue;
            }
            values.insert(name, (value, rank + 1));
            environment.sources.insert(
                name.clone(),
                Source {
                    file: Some(file.clone()),
                    written_as: None,
                },
            );
            changes.set.push((name.clone(), value.clone()));
        }
    }
    let mut names: Vec<&'static str> = ALIASES.iter().map(|(_, name)| *name).collect();
    names.dedup();
    for name in names {
        // Candidates in precedence order; a stable sort keeps own name first.
        let mut candidates: Vec<(Option<&'static str>, &str, usize)> = Vec::new();
        if let Some((value, rank)) = values.get(name) {
            candidates.push((None, value, *rank));
        }
        for (alias, _) in ALIASES.iter().filter(|(_, n)| *n == name) {
            if let Some((value, rank)) = values.get(alias) {
                candidates.push((Some(alias), value, *rank));
            }
        }
        candidates.sort_by_key(|(_, _, rank)| *rank);
        let Some((chosen_alias, chosen, _)) = candidates.first().copied() else {
            continue;
        };
        for (alias, value, _) in &candidates[1..] {
            if let Some(alias) = alias
                && *value != chosen
            {
                environment.notes.push(Note::Shadowed { alias, name });
            }
        }
        let Some(alias) = chosen_alias else { continue };
        let file = environment.sources.get(alias).and_then(|s| s.file.clone());
        environment.notes.push(Note::Alias {
            alias,
            name,
            file: file.clone(),
        });
        environment.sources.insert(
            name.to_owned(),
            Source {
                file,
                written_as: Some(alias),
            },
        );
        changes.set.retain(|(n, _)| n != name);
        changes.set.push((name.to_owned(), chosen.to_owned()));
    }
    (environment, changes)
}

/// Parses a `.env` file as python-dotenv does; returns its entries in order
/// and the lines it could not parse (1-based) with the reason.
fn parse_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> (Entries, Vec<(usize, String)>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries: Entries = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let earlier = |name: &str| {
            lookup(name).or_else(|| {
                entries
                    .iter()
                    .rev()
                    .find(|(k, v)| k == name && !v.is_empty())
                    .map(|(_, v)| v.clone())
            })
        };
        match parse_line(line, earlier) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(reason) => problems.push((i + 1, reason)),
        }
    }
    (entries, problems)
}

/// One line: `[export] KEY=VALUE`, the value unquoted (literal up to a
/// ` #` comment), in single quotes (literal) or in double quotes (with
/// backslash escapes); `${NAME}` and `${NAME:-default}` are expanded
/// outside single quotes. `None` for blank lines, comments and a bare `KEY`.
fn parse_line(line: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<(String, String)>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let (key, rest) = match line.chars().next() {
        Some(q @ ('\'' | '"')) => {
            let end = line[1..].find(q).ok_or("the variable name's quote is not closed")?;
            (&line[1..=end], &line[end + 2..])
        }
        _ => {
            let end = line
                .find(|c: char| c == '=' || c == '#' || c.is_whitespace())
                .unwrap_or(line.len());
            (&line[..end], &line[end..])
        }
    };
    if key.is_empty() {
        return Err("no variable name before `=`".into());
    }
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let value = rest
        .strip_prefix('=')
        .ok_or_else(|| format!("expected `=` after {key}"))?
        .trim_start();
    let (value, tail) = match value.chars().next() {
        Some('\'') => {
            let (body, tail) = quoted(&value[1..], '\'')?;
            (unescape(&body, &['\\', '\'']), tail)
        }
        Some('"') => {
            let (body, tail) = quoted(&value[1..], '"')?;
            (
                expand(
                    &unescape(&body, &['\\', '\'', '"', 'a', 'b', 'f', 'n', 'r', 't', 'v']),
                    &lookup,
                ),
                tail,
            )
        }
        _ => {
            let end = value
                .char_indices()
                .find(|&(i, c)| c == '#' && value[..i].ends_with(char::is_whitespace))
                .map_or(value.len(), |(i, _)| i);
            (expand(value[..end].trim_end(), &lookup), "")
        }
    };
    let tail = tail.trim_start();
    if !tail.is_empty() && !tail.starts_with('#') {
        return Err(format!("unexpected text after the quoted value of {key}"));
    }
    Ok(Some((key.to_owned(), value)))
}

/// The text up to the closing `quote` (a backslash escapes the next
/// character, kept for [`unescape`]) and what follows it.
fn quoted(s: &str, quote: char) -> Result<(String, &str), String> {
    let mut body = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((body, &s[i + c.len_utf8()..]));
        }
        body.push(c);
        if c == '\\'
            && let Some((_, next)) = chars.next()
        {
            body.push(next);
        }
    }
    Err(format!("the value's {quote} quote is not closed on its line"))
}

/// Decodes `\x` for the given `x` (python-dotenv's escapes); any other
/// backslash is kept as written.
fn unescape(s: &str, escapes: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('\\', Some(next)) if escapes.contains(&next) => {
                chars.next();
                out.push(match next {
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\u{b}',
                    other => other,
                });
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands `${NAME}` and `${NAME:-default}` (python-dotenv's interpolation;
/// a bare `$NAME` is kept as written, as there).
fn expand(s: &str, lookup: &impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else { break };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + 2 + len];
        let (name, default) = inner.split_once(":-").unwrap_or((inner, ""));
        out.push_str(&lookup(name).unwrap_or_else(|| default.to_owned()));
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Result<Option<(String, String)>, String> {
        parse_line(s, |name| (name == "HOME").then(|| "/home/me".to_owned()))
    }

    fn value(s: &str) -> String {
        line(s).unwrap().unwrap().1
    }

    #[test]
    fn lines_parse_as_python_dotenv_does() {
        // The old bot's Windows paths: unquoted backslashes are literal.
        assert_eq!(
            value(r"HAVEN_DB_PATH=C:\Users\Me\OneDrive\Desktop\Haven_mdev\data\VH-Database.db"),
            r"C:\Users\Me\OneDrive\Desktop\Haven_mdev\data\VH-Database.db"
        );
        assert_eq!(value(r"P='C:\Users\it\'s'"), r"C:\Users\it's");
        assert_eq!(value(r#"P="a\tb\\c\d""#), "a\tb\\c\\d");
        assert_eq!(value("DEBUG_MODE=True  # comment"), "True");
        assert_eq!(value("URL=http://x/#anchor"), "http://x/#anchor");
        assert_eq!(value("export  KEY = spaced value "), "spaced value");
        assert_eq!(value("'QUOTED KEY'=1"), "1");
        assert_eq!(value("EMPTY="), "");
        assert_eq!(value("P=${HOME}/bot"), "/home/me/bot");
        assert_eq!(value("P='${HOME}'"), "${HOME}");
        assert_eq!(value("P=${NOPE:-fallback} $HOME"), "fallback $HOME");
        assert_eq!(line("   # a comment"), Ok(None));
        assert_eq!(line(""), Ok(None));
        assert_eq!(line("BARE_KEY"), Ok(None));
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(line("=value").unwrap_err().contains("no variable name"));
        assert!(line("KEY value").unwrap_err().contains("expected `=` after KEY"));
        assert!(line("KEY=\"open").unwrap_err().contains("not closed"));
        assert!(line("KEY='a' b").unwrap_err().contains("unexpected text"));
    }

    #[test]
    fn a_file_reports_bad_lines_by_number_and_keeps_the_rest() {
        let (entries, problems) = parse_file("\u{feff}A=1\nnot a line\nB=${A}2\n", |_| None);
        assert_eq!(entries, [("A".into(), "1".into()), ("B".into(), "12".into())]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, 2);
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn old_names_are_read_as_new_ones_and_the_new_name_wins() {
        let file = PathBuf::from("/bot/.env");
        let files = vec![(
            file.clone(),
            owned(&[
                ("BOT_TOKEN", "from-file"),
                ("GUILD_ID", "42"),
                ("DATABASE_PATH", "./data/keeper.db"),
                ("DISCOVERY_CHANNEL_ID", ""),
            ]),
        )];
        let process = owned(&[("DISCORD_GUILD_ID", "7"), ("SYNC_INTERVAL", "")]);
        let (env, changes) = resolve(&process, &files, &["SYNC_INTERVAL", "DISCORD_GUILD_ID"]);
        let set: BTreeMap<_, _> = changes.set.iter().cloned().collect();
        assert_eq!(set.get("DISCORD_TOKEN").map(String::as_str), Some("from-file"));
        assert_eq!(set.get("KEEPER_DB_PATH").map(String::as_str), Some("./data/keeper.db"));
        // The environment's own name beats the file's old one.
        assert_eq!(set.get("DISCORD_GUILD_ID"), None);
        assert!(env.notes.contains(&Note::Shadowed {
            alias: "GUILD_ID",
            name: "DISCORD_GUILD_ID"
        }));
        // Empty means unset: not written, and removed from the environment.
        assert!(!set.contains_key("DISCOVERY_CHANNEL_ID"));
        assert_eq!(changes.unset, ["SYNC_INTERVAL"]);
        assert_eq!(
            env.describe("DISCORD_TOKEN"),
            "DISCORD_TOKEN (written BOT_TOKEN in /bot/.env)"
        );
        assert_eq!(
            env.describe("DISCORD_GUILD_ID"),
            "DISCORD_GUILD_ID (in the environment)"
        );
    }

    #[test]
    fn the_environment_beats_the_working_folder_which_beats_the_folder_above() {
        let files = vec![
            (
                PathBuf::from("/bot/src/.env"),
                owned(&[("SYNC_INTERVAL", "5"), ("BOT_TOKEN", "a")]),
            ),
            (
                PathBuf::from("/bot/.env"),
                owned(&[("SYNC_INTERVAL", "9"), ("DISCORD_TOKEN", "b"), ("SYNC_LEASE", "60")]),
            ),
        ];
        let process = owned(&[("SYNC_LEASE", "30")]);
        let (env, changes) = resolve(&process, &files, &[]);
        let set: BTreeMap<_, _> = changes.set.iter().cloned().collect();
        assert_eq!(set.get("SYNC_INTERVAL").map(String::as_str), Some("5"));
        assert_eq!(set.get("SYNC_LEASE"), None);
        // The nearer file's old name beats the farther file's new one.
        assert_eq!(set.get("DISCORD_TOKEN").map(String::as_str), Some("a"));
        assert_eq!(env.describe("SYNC_INTERVAL"), "SYNC_INTERVAL (in /bot/src/.env)");
        assert_eq!(
            dotenv_files(Path::new("/bot/src")),
            [PathBuf::from("/bot/src/.env"), PathBuf::from("/bot/.env")]
        );
        assert_eq!(dotenv_files(Path::new("/bot")), [PathBuf::from("/bot/.env")]);
    }
}
