//! Which of the bot's gateway shards this process runs (`DISCORD_SHARDS`
//! of `DISCORD_SHARD_COUNT`), so several hosts with the same token split
//! the guilds between them instead of each receiving every event.
//!
//! Discord sends a guild's events on shard `(guild_id >> 22) % count`; every
//! host must be given the same count and together cover `0..count`.

/// `DISCORD_SHARDS` as written: one shard (`1`) or an inclusive range (`0-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpan {
    pub first: u32,
    pub last: u32,
}

impl std::fmt::Display for ShardSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// The shards a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharding {
    /// Neither variable set: serenity's single shard, as before sharding.
    Single,
    /// Shards `first..=last` of `count`.
    Range { first: u32, last: u32, count: u32 },
}

/// `DISCORD_SHARDS`: `N` or `FIRST-LAST`, each a shard number.
pub fn parse_shard_span(text: &str) -> Result<ShardSpan, String> {
    let number = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| format!("{part:?} is not a shard number; expected one shard (1) or a range (0-1)"))
    };
    let span = match text.split_once('-') {
        Some((first, last)) => ShardSpan {
            first: number(first)?,
            last: number(last)?,
        },
        None => {
            let shard = number(text)?;
            ShardSpan {
                first: shard,
                last: shard,
            }
        }
    };
    if span.first > span.last {
        return Err(format!(
            "the range {}-{} is backwards; write the lower shard first",
            span.first, span.last
        ));
    }
    Ok(span)
}

/// Why a pair of settings does not describe shards of one bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardingError {
    /// `DISCORD_SHARDS` without `DISCORD_SHARD_COUNT`.
    NoCount,
    /// A shard at or past the count.
    OutOfRange { last: u32, count: u32 },
}

impl std::fmt::Display for ShardingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardingError::NoCount => f.write_str(
                "needs DISCORD_SHARD_COUNT, the number of shards all hosts together run (the same on every host)",
            ),
            ShardingError::OutOfRange { last, count } => write!(
                f,
                "shard {last} does not exist with DISCORD_SHARD_COUNT={count}: shards are numbered 0 to {}",
                count - 1
            ),
        }
    }
}

/// The shards to run from the two settings. A count alone runs every shard
/// of that count in this process.
pub fn sharding(span: Option<ShardSpan>, count: Option<u32>) -> Result<Sharding, ShardingError> {
    match (span, count) {
        (None, None) => Ok(Sharding::Single),
        (Some(_), None) => Err(ShardingError::NoCount),
        (None, Some(count)) => Ok(Sharding::Range {
            first: 0,
            last: count.saturating_sub(1),
            count,
        }),
        (Some(span), Some(count)) if span.last >= count => Err(ShardingError::OutOfRange { last: span.last, count }),
        (Some(span), Some(count)) => Ok(Sharding::Range {
            first: span.first,
            last: span.last,
            count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_or_a_range_and_nothing_else() {
        assert_eq!(parse_shard_span("1"), Ok(ShardSpan { first: 1, last: 1 }));
        assert_eq!(parse_shard_span("0-1"), Ok(ShardSpan { first: 0, last: 1 }));
        assert_eq!(parse_shard_span(" 2 - 3 "), Ok(ShardSpan { first: 2, last: 3 }));
        for bad in ["", "a", "1-", "-1", "1-2-3", "3-1", "1,2", "0x1"] {
            assert!(parse_shard_span(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_shard_span("3-1").unwrap_err().contains("backwards"));
    }

    #[test]
    fn the_range_must_lie_within_the_count() {
        let span = |first, last| Some(ShardSpan { first, last });
        assert_eq!(sharding(None, None), Ok(Sharding::Single));
        assert_eq!(
            sharding(span(0, 1), Some(4)),
            Ok(Sharding::Range {
                first: 0,
                last: 1,
                count: 4
            })
        );
        assert_eq!(
            sharding(None, Some(2)),
            Ok(Sharding::Range {
                first: 0,
                last: 1,
                count: 2
            })
        );
        assert_eq!(sharding(span(1, 1), None), Err(ShardingError::NoCount));
        assert_eq!(
            sharding(span(2, 2), Some(2)),
            Err(ShardingError::OutOfRange { last: 2, count: 2 })
        );
        assert!(
            ShardingError::OutOfRange { last: 2, count: 2 }
                .to_string()
                .contains("numbered 0 to 1")
        );
    }
}
