//! A prompt cache as each provider runs one, simplified, so tests and benchmarks see cached tokens
//! where a request repeats an earlier request's prefix.
//!
//! A request's prompt is read as a list of pieces in the order a model reads them: each tool
//! definition, the system prompt (each of its blocks), then each message (Anthropic: each content
//! block), every piece as its JSON text without `cache_control`. Two requests share a prefix when
//! their first pieces are byte for byte the same.
//!
//! - OpenAI: automatic. The prompt's pieces, joined, are cut in blocks of [`OPENAI_BLOCK_BYTES`]
//!   bytes (about 128 tokens); the longest run of whole blocks an earlier request (any, since the
//!   server was started) also began with is read from the cache. Nothing is reported as written.
//!   Real OpenAI also wants at least 1024 tokens; the fake caches from the first block, so small
//!   test prompts show it too.
//! - Anthropic: only at `cache_control` breakpoints. Each breakpoint writes the prefix up to its
//!   piece; a breakpoint reads the longest prefix written before that ends at it or up to
//!   [`ANTHROPIC_LOOKBACK`] pieces before it. What lies between the read and the last breakpoint
//!   is reported written; the rest is plain input.
//!
//! Tokens: the request's input estimate is split between the kinds in proportion to the bytes of
//! each. The record of prefixes is bounded ([`MAX_PREFIXES`], oldest forgotten first).

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hasher};
use std::sync::Mutex;

use crate::Api;

/// Bytes of prompt per OpenAI cache block (some 128 tokens).
pub const OPENAI_BLOCK_BYTES: usize = 512;
/// How many pieces before a breakpoint Anthropic looks back for an earlier entry.
pub const ANTHROPIC_LOOKBACK: usize = 20;
/// Prefixes the server remembers.
pub const MAX_PREFIXES: usize = 65_536;

/// One piece of a request's prompt, as [the module](self) describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptPiece {
    pub text: String,
    /// Whether the request put a `cache_control` breakpoint on it.
    pub breakpoint: bool,
}

/// Input tokens by kind; `plain + read + written` is the request's input estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub plain: u64,
    pub read: u64,
    pub written: u64,
}

/// The server's record of prompt prefixes it has seen (OpenAI) or written (Anthropic).
#[derive(Debug, Default)]
pub struct PromptCache {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    set: HashSet<(Api, u64)>,
    order: VecDeque<(Api, u64)>,
}

impl Seen {
    fn insert(&mut self, key: (Api, u64)) {
        if self.set.insert(key) {
            self.order.push_back(key);
            while self.order.len() > MAX_PREFIXES {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// The hash of each prefix of `pieces` ending after piece `i`, for every `i`.
fn piece_prefix_hashes(pieces: &[PromptPiece]) -> Vec<(u64, usize)> {
    let mut hasher = DefaultHasher::new();
    let mut bytes = 0;
    pieces
        .iter()
        .map(|piece| {
            hasher.write(piece.text.as_bytes());
            hasher.write_u8(0xff);
            bytes += piece.text.len() + 1;
            (hasher.clone().finish(), bytes)
        })
        .collect()
}

impl PromptCache {
    pub fn new() -> Self {
        PromptCache::default()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What this request reads from and writes to the cache, recording its prefixes for later
    /// requests. `input_tokens` is the request's whole input estimate.
    pub fn account(&self, api: Api, pieces: &[PromptPiece], input_tokens: u64) -> CacheUsage {
        let total: usize = pieces.iter().map(|p| p.text.len() + 1).sum();
        if total == 0 {
            return CacheUsage {
                plain: input_tokens,
                ..CacheUsage::default()
            };
        }
        let (read, written) = match api {
            Api::OpenAi => (self.openai(pieces), 0),
            Api::Anthropic => self.anthropic(pieces),
        };
        let share = |bytes: usize| (input_tokens as u128 * bytes.min(total) as u128 / total as u128) as u64;
        let read = share(read);
        let written = share(written).min(input_tokens - read);
        CacheUsage {
            plain: input_tokens - read - written,
            read,
            written,
        }
    }

    /// Bytes read: the longest run of whole blocks seen before.
    fn openai(&self, pieces: &[PromptPiece]) -> usize {
        let mut hasher = DefaultHasher::new();
        let mut blocks = Vec::new();
        let mut filled = 0;
        for byte in pieces
            .iter()
            .flat_map(|p| p.text.as_bytes().iter().copied().chain([0xff]))
        {
            hasher.write_u8(byte);
            filled += 1;
            if filled % OPENAI_BLOCK_BYTES == 0 {
                blocks.push(hasher.clone().finish());
            }
        }
        let mut seen = self.seen();
        let hit = blocks
            .iter()
            .rposition(|hash| seen.set.contains(&(Api::OpenAi, *hash)))
            .map_or(0, |i| (i + 1) * OPENAI_BLOCK_BYTES);
        for hash in blocks {
            seen.insert((Api::OpenAi, hash));
        }
        hit
    }

    /// Bytes read and written, by the breakpoints.
    fn anthropic(&self, pieces: &[PromptPiece]) -> (usize, usize) {
        let prefixes = piece_prefix_hashes(pieces);
        let breakpoints: Vec<usize> = pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.breakpoint)
            .map(|(i, _)| i)
            .collect();
        let Some(&last) = breakpoints.last() else {
            return (0, 0);
        };
        let mut seen = self.seen();
        let read = breakpoints
            .iter()
            .filter_map(|&b| {
                (b.saturating_sub(ANTHROPIC_LOOKBACK)..=b)
                    .rev()
                    .find(|&i| seen.set.contains(&(Api::Anthropic, prefixes[i].0)))
            })
            .max()
            .map_or(0, |i| prefixes[i].1);
        let written = prefixes[last].1.saturating_sub(read);
        for b in breakpoints {
            seen.insert((Api::Anthropic, prefixes[b].0));
        }
        (read, written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(texts: &[&str], marks: &[usize]) -> Vec<PromptPiece> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| PromptPiece {
                text: t.to_string(),
                breakpoint: marks.contains(&i),
            })
            .collect()
    }

    #[test]
    fn openai_reads_whole_blocks_of_a_repeated_prefix() {
        let cache = PromptCache::new();
        let shared = "s".repeat(2 * OPENAI_BLOCK_BYTES);
        let first = pieces(&[&shared, "unit one"], &[]);
        assert_eq!(cache.account(Api::OpenAi, &first, 1000).read, 0);
        let second = pieces(&[&shared, "unit two, longer"], &[]);
        let usage = cache.account(Api::OpenAi, &second, 1000);
        assert!(usage.read > 0 && usage.read < 1000, "{usage:?}");
        assert_eq!(usage.plain + usage.read, 1000);
        assert_eq!(usage.written, 0);
    }

    #[test]
    fn anthropic_reads_only_what_a_breakpoint_wrote() {
        let cache = PromptCache::new();
        let turn = pieces(&["tools", "system", "task"], &[1, 2]);
        let first = cache.account(Api::Anthropic, &turn, 100);
        assert_eq!((first.read, first.plain), (0, 0), "all written: {first:?}");
        let next = pieces(&["tools", "system", "task", "call", "result"], &[1, 4]);
        let usage = cache.account(Api::Anthropic, &next, 100);
        assert!(usage.read > 0 && usage.written > 0, "{usage:?}");
        assert_eq!(usage.plain + usage.read + usage.written, 100);
        let unmarked = pieces(&["tools", "system", "task"], &[]);
        assert_eq!(cache.account(Api::Anthropic, &unmarked, 100).plain, 100);
    }

    #[test]
    fn the_record_is_bounded() {
        let cache = PromptCache::new();
        for n in 0..(MAX_PREFIXES + 10) {
            let mut seen = cache.seen();
            seen.insert((Api::OpenAi, n as u64));
        }
        assert_eq!(cache.seen().set.len(), MAX_PREFIXES);
        assert_eq!(cache.seen().order.len(), MAX_PREFIXES);
    }
}
