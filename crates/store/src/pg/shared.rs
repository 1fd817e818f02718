//! What every host shares (see `shared.rs`), on PostgreSQL. A pause's end is the server's clock, so
//! hosts whose clocks disagree pause alike.

use super::Pg;
use crate::shared::SpendUpdate;
use crate::Result;

impl Pg {
    pub(crate) fn record_spend(&self, mission: &str, tokens: i64, update: SpendUpdate) -> Result<i64> {
        let mission = mission.to_string();
        // `LEAST` against overflow: a total that large is a bug, never a wrap to negative.
        let set = match update {
            SpendUpdate::Add => {
                "LEAST(orchestrator_mission_spend.tokens::numeric + EXCLUDED.tokens, 9223372036854775807)::bigint"
            }
            SpendUpdate::Raise => "GREATEST(orchestrator_mission_spend.tokens, EXCLUDED.tokens)",
        };
        self.call(move |c, repo| {
            let row = c.query_one(
                &format!(
                    "INSERT INTO orchestrator_mission_spend (repo, mission, tokens) VALUES ($1, $2, $3)
                     ON CONFLICT (repo, mission) DO UPDATE SET tokens = {set}
                     RETURNING tokens"
                ),
                &[&repo, &mission, &tokens],
            )?;
            Ok(row.try_get(0)?)
        })
    }

    pub(crate) fn spend(&self, mission: &str) -> Result<i64> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let row = c.query_opt(
                "SELECT tokens FROM orchestrator_mission_spend WHERE repo = $1 AND mission = $2",
                &[&repo, &mission],
            )?;
            Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
        })
    }

    pub(crate) fn note_throttle(&self, endpoint: &str, cuts: i64, pause_ms: Option<i64>) -> Result<()> {
        let endpoint = endpoint.to_string();
        self.call(move |c, _repo| {
            c.execute(
                "INSERT INTO orchestrator_endpoint_throttles (endpoint, cuts, paused_until)
                 VALUES ($1, $2, (extract(epoch FROM now()) * 1000)::bigint + $3)
                 ON CONFLICT (endpoint) DO UPDATE
                     SET cuts = orchestrator_endpoint_throttles.cuts + EXCLUDED.cuts,
                         paused_until = CASE WHEN EXCLUDED.paused_until IS NULL
                                             THEN orchestrator_endpoint_throttles.paused_until
                                             ELSE GREATEST(orchestrator_endpoint_throttles.paused_until,
                                                           EXCLUDED.paused_until) END",
                &[&endpoint, &cuts, &pause_ms],
            )?;
            Ok(())
        })
    }

    /// Each endpoint with its cuts and what is left of its pause in milliseconds (negative: over).
    pub(crate) fn throttles(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        self.call(move |c, _repo| {
            let rows = c.query(
                "SELECT endpoint, cuts, paused_until - (extract(epoch FROM now()) * 1000)::bigint
                 FROM orchestrator_endpoint_throttles",
                &[],
            )?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        })
    }
}
