//! Estimated cost of model calls, from a price table: USD per million input and output tokens, per
//! model-name prefix. Built-in prices for a few well-known models are published list prices at the
//! time of writing, marked as estimates; the config's `[prices."<model prefix>"]` tables override them.
//!
//! Input read from or written to a provider's prompt cache has prices of its own. Where a table
//! does not give them, they follow the providers' public ratios to the input price: Anthropic
//! (`claude…`) bills cache reads at 0.1 and cache writes at 1.25 times input, OpenAI-style endpoints
//! cached input at 0.5 (less for models where it is known) and have no cache writes.

use std::collections::BTreeMap;

use orchestrator_protocol::TokenUsage;
use serde::{Deserialize, Serialize};

/// What one model costs, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    /// USD per million input tokens read from the prompt cache (default: a ratio of `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    /// USD per million input tokens written to the prompt cache (default: a ratio of `input`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// True for built-in prices, which may be out of date; false for prices the user gave.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub estimate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("the price table is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("the price of `{model}` must be a finite, non-negative number of USD per million tokens")]
    InvalidPrice { model: String },
}

/// Prices by model-name prefix; the longest matching prefix wins, so `gpt-4.1-mini` can differ from
/// `gpt-4.1`. In a config file this is the `prices` table:
///
/// ```toml
/// [prices."gpt-4.1"]
/// input = 2.0
/// output = 8.0
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    prices: BTreeMap<String, ModelPrice>,
}

/// Cache prices as a share of the input price, for a model whose table gives none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheRatios {
    pub read: f64,
    pub write: f64,
}

/// Anthropic's published multipliers (5-minute cache).
pub const ANTHROPIC_CACHE: CacheRatios = CacheRatios {
    read: 0.1,
    write: 1.25,
};
/// OpenAI-style automatic caching: reads at half price unless known, writes at the input price.
pub const OPENAI_CACHE: CacheRatios = CacheRatios {
    read: 0.5,
    write: 1.0,
};

impl CacheRatios {
    /// The family's ratios, by model name.
    pub fn for_model(model: &str) -> CacheRatios {
        let lower = model.to_ascii_lowercase();
        if lower.contains("claude") {
            ANTHROPIC_CACHE
        } else {
            OPENAI_CACHE
        }
    }
}

/// Built-in cached-input prices where a provider lists one (USD per million tokens).
const DEFAULT_CACHE_READ: &[(&str, f64)] = &[
    ("gpt-4.1", 0.5),
    ("gpt-4.1-mini", 0.1),
    ("gpt-4.1-nano", 0.025),
    ("gpt-4o", 1.25),
    ("gpt-4o-mini", 0.075),
    ("gpt-5", 0.125),
    ("gpt-5-mini", 0.025),
    ("gpt-5-nano", 0.005),
    ("o3", 0.5),
    ("o3-mini", 0.55),
    ("o4-mini", 0.275),
];

/// Built-in list prices (USD per million input / output tokens).
const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-3-5-haiku", 0.8, 4.0),
];

impl PriceTable {
    /// An empty table: every model's cost is unknown.
    pub fn new() -> Self {
        PriceTable::default()
    }

    /// The built-in estimates.
    pub fn with_defaults() -> Self {
        let mut table = PriceTable::new();
        for (model, input, output) in DEFAULT_PRICES {
            table.prices.insert(
                model.to_string(),
                ModelPrice {
                    input: *input,
                    output: *output,
                    cache_read: DEFAULT_CACHE_READ
                        .iter()
                        .find(|(name, _)| name == model)
                        .map(|(_, read)| *read),
                    cache_write: None,
                    estimate: true,
                },
            );
        }
        table
    }

    /// Reads a document whose `prices` table holds the prices (the config file's shape).
    pub fn from_toml(text: &str) -> Result<Self, PricingError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Document {
            #[serde(default)]
            prices: PriceTable,
        }
        let table = toml::from_str::<Document>(text)?.prices;
        table.validate()?;
        Ok(table)
    }

    /// Refuses prices that are negative, infinite or not a number.
    pub fn validate(&self) -> Result<(), PricingError> {
        let valid = |p: f64| p.is_finite() && p >= 0.0;
        let valid_cache = |p: Option<f64>| p.is_none_or(valid);
        match self.prices.iter().find(|(_, p)| {
            !valid(p.input) || !valid(p.output) || !valid_cache(p.cache_read) || !valid_cache(p.cache_write)
        }) {
            Some((model, _)) => Err(PricingError::InvalidPrice { model: model.clone() }),
            None => Ok(()),
        }
    }

    pub fn set(&mut self, model_prefix: impl Into<String>, price: ModelPrice) {
        self.prices.insert(model_prefix.into(), price);
    }

    /// Adds `other`'s prices, replacing any for the same prefix (the user's over the built-in ones).
    pub fn merge(&mut self, other: PriceTable) {
        self.prices.extend(other.prices);
    }

    /// The price for `model` and the prefix it was found under: the longest prefix of the name
    /// (compared without case), else of the name after a provider prefix (`openai/gpt-4.1`).
    pub fn price(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        let lower = model.trim().to_ascii_lowercase();
        let bare = lower.rsplit('/').next().unwrap_or(&lower);
        self.longest_prefix(&lower).or_else(|| self.longest_prefix(bare))
    }

    fn longest_prefix(&self, name: &str) -> Option<(&str, &ModelPrice)> {
        self.prices
            .iter()
            .filter(|(prefix, _)| name.starts_with(&prefix.to_ascii_lowercase()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(prefix, price)| (prefix.as_str(), price))
    }

    /// The cost in USD of `usage` on `model`, each kind of input at its own price; `None` for a
    /// model with no price.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Option<f64> {
        let (_, price) = self.price(model)?;
        let ratios = CacheRatios::for_model(model);
        let read = price.cache_read.unwrap_or(price.input * ratios.read);
        let write = price.cache_write.unwrap_or(price.input * ratios.write);
        let parts = [
            (usage.input_tokens, price.input),
            (usage.output_tokens, price.output),
            (usage.cache_read_tokens, read),
            (usage.cache_write_tokens, write),
        ];
        Some(
            parts
                .iter()
                .map(|(tokens, usd)| *tokens as f64 * usd)
                .sum::<f64>()
                / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        }
    }

    fn cached(input: u64, read: u64, write: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            cache_read_tokens: read,
            cache_write_tokens: write,
            ..Default::default()
        }
    }

    #[test]
    fn cached_input_costs_its_own_price() {
        let table = PriceTable::with_defaults();
        // Anthropic: reads 0.1x, writes 1.25x the $3 input price.
        let sonnet = table.cost("claude-sonnet-4-5", cached(1_000_000, 1_000_000, 1_000_000));
        assert!(close(sonnet, 3.0 + 0.3 + 3.75), "{sonnet:?}");
        // OpenAI: the listed cached price where there is one, else half the input price.
        assert!(close(table.cost("gpt-4.1", cached(0, 1_000_000, 0)), 0.5));
        let mut custom = PriceTable::new();
        custom.set(
            "acme",
            ModelPrice {
                input: 2.0,
                output: 2.0,
                cache_read: None,
                cache_write: None,
                estimate: false,
            },
        );
        assert!(close(custom.cost("acme-1", cached(0, 1_000_000, 0)), 1.0));
        let user = PriceTable::from_toml(
            "[prices.acme]\ninput = 2\noutput = 2\ncache_read = 0.2\ncache_write = 3\n",
        )
        .expect("valid");
        assert!(close(user.cost("acme-1", cached(0, 1_000_000, 1_000_000)), 3.2));
        assert!(PriceTable::from_toml("[prices.acme]\ninput = 2\noutput = 2\ncache_read = -1\n").is_err());
    }

    #[test]
    fn absurd_cached_counts_cost_a_finite_amount() {
        let table = PriceTable::with_defaults();
        let cost = table.cost("claude-sonnet-4", cached(u64::MAX, u64::MAX, u64::MAX));
        assert!(cost.is_some_and(|c| c.is_finite() && c > 0.0), "{cost:?}");
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn the_longest_prefix_wins() {
        let table = PriceTable::with_defaults();
        assert!(close(table.cost("gpt-4.1", usage(1_000_000, 1_000_000)), 10.0));
        assert!(close(
            table.cost("gpt-4.1-mini-2025-04-14", usage(1_000_000, 0)),
            0.4
        ));
        assert!(close(
            table.cost("claude-opus-4-5-20251101", usage(0, 1_000_000)),
            25.0
        ));
        assert!(close(
            table.cost("claude-opus-4-1-20250805", usage(0, 1_000_000)),
            75.0
        ));
        assert!(close(table.cost("o3-mini", usage(1_000_000, 0)), 1.1));
        assert_eq!(
            table.price("gpt-4.1-nano").map(|(prefix, _)| prefix),
            Some("gpt-4.1-nano")
        );
        assert!(table.price("gpt-4o").is_some_and(|(_, p)| p.estimate));
    }

    #[test]
    fn unknown_models_have_no_cost() {
        let table = PriceTable::with_defaults();
        assert_eq!(table.cost("qwen2.5-coder:32b", usage(10, 10)), None);
        assert_eq!(table.cost("", usage(10, 10)), None);
        assert_eq!(PriceTable::new().cost("gpt-4.1", usage(10, 10)), None);
    }

    #[test]
    fn provider_prefixes_and_case_are_understood() {
        let table = PriceTable::with_defaults();
        assert!(close(table.cost("openai/gpt-4o-mini", usage(1_000_000, 0)), 0.15));
        assert!(close(table.cost("GPT-4.1", usage(1_000_000, 0)), 2.0));
    }

    #[test]
    fn reads_the_config_shape_and_user_prices_override_estimates() {
        let text = r#"
            [prices."gpt-4.1"]
            input = 1.0
            output = 4.0

            [prices."qwen"]
            input = 0.0
            output = 0.0
        "#;
        let user = PriceTable::from_toml(text).expect("valid");
        assert_eq!(
            user.price("gpt-4.1").map(|(_, p)| *p),
            Some(ModelPrice {
                input: 1.0,
                output: 4.0,
                cache_read: None,
                cache_write: None,
                estimate: false
            })
        );
        let mut table = PriceTable::with_defaults();
        table.merge(user);
        assert!(close(table.cost("gpt-4.1", usage(1_000_000, 1_000_000)), 5.0));
        assert!(
            close(table.cost("gpt-4.1-mini", usage(1_000_000, 0)), 0.4),
            "longer built-in prefix still wins"
        );
        assert!(close(table.cost("qwen3:8b", usage(5_000, 5_000)), 0.0));
        assert_eq!(
            PriceTable::from_toml("").map(|t| t == PriceTable::new()).ok(),
            Some(true)
        );
    }

    #[test]
    fn embeds_in_a_config_as_a_table() {
        #[derive(Deserialize)]
        struct Config {
            prices: PriceTable,
        }
        let config: Config =
            toml::from_str("[prices.claude-sonnet-4]\ninput = 3\noutput = 15\n").expect("valid");
        assert!(close(
            config.prices.cost("claude-sonnet-4-5", usage(1_000_000, 0)),
            3.0
        ));
    }

    #[test]
    fn refuses_bad_tables() {
        let unknown_key = "[prices.\"m\"]\ninput = 1.0\noutput = 1.0\ncurrency = \"EUR\"\n";
        assert!(matches!(
            PriceTable::from_toml(unknown_key),
            Err(PricingError::Toml(_))
        ));
        let missing = "[prices.\"m\"]\ninput = 1.0\n";
        assert!(PriceTable::from_toml(missing).is_err());
        let negative = "[prices.\"m\"]\ninput = -1.0\noutput = 1.0\n";
        let error = PriceTable::from_toml(negative).expect_err("negative");
        assert!(error.to_string().contains("`m`"), "{error}");
        assert!(PriceTable::from_toml("[other]\nx = 1\n").is_err());
    }
}
