//! `tributary eval`: measures label quality of a model, prompt and mode on a labeled JSON
//! Lines file, with the same client, retry policy and parser as the pipeline and the
//! pipeline's concurrency. Scoring is pure ([`score`]): accuracy, per-label precision and
//! recall, per-language accuracy, a confusion matrix, the share of unparseable replies, mean
//! confidence, latency p50/p99. Score-mode runs keep every post's label scores, so that
//! calibrations are compared on them without asking the model again ([`recalibrate`]).
//!
//! Must never: count an `unknown` as correct, or hide items that failed to load (they are
//! reported).

use crate::clients::llm::{classify, LlmClient, LlmCounters, Outcome, RetryPolicy};
use crate::config::LlmConfig;
use crate::flow::circuit::CircuitBreaker;
use crate::protocol::llm_score::{self, LabelScores};
use crate::protocol::mastodon::{Post, Status};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// One labeled example.
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    pub gold: String,
    /// The post's language (`""` when unknown).
    pub language: String,
}

/// Reads a labeled file: each line a Mastodon status with an extra `label` field, or
/// `{"text": …, "label": …}`. Returns the examples and the number of unreadable lines.
pub fn load(path: &std::path::Path) -> Result<(Vec<Example>, usize), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) => {
                bad += 1;
                continue;
            }
        };
        let Some(gold) = v
            .get("label")
            .and_then(|l| l.as_str())
            .map(|s| s.to_lowercase())
        else {
            bad += 1;
            continue;
        };
        let language = v
            .get("language")
            .and_then(|l| l.as_str())
            .unwrap_or("")
            .to_string();
        let text = match v.get("text").and_then(|t| t.as_str()) {
            Some(t) => t.to_string(),
            None => match serde_json::from_value::<Status>(v.clone()) {
                Ok(s) => Post::from_status("eval", &s).text,
                Err(_) => {
                    bad += 1;
                    continue;
                }
            },
        };
        out.push(Example {
            text,
            gold,
            language,
        });
    }
    Ok((out, bad))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub prompt_id: String,
    /// `generate`, `score`, or `score` with a calibration (`score+contextual`…).
    pub mode: String,
    /// Mean probability of the chosen labels (score mode).
    pub mean_confidence: Option<f64>,
    /// Accuracy per language, most examples first: (language, examples, accuracy).
    pub per_language: Vec<(String, usize, f64)>,
    pub examples: usize,
    pub accuracy: f64,
    pub per_label: Vec<LabelScore>,
    /// Rows: gold labels; columns: predicted labels, then `unknown`.
    pub confusion: Vec<Vec<usize>>,
    pub labels: Vec<String>,
    pub unparseable_share: f64,
    pub latency_p50_ms: u32,
    pub latency_p99_ms: u32,
    pub requests: u64,
    pub errors: u64,
    pub posts_per_s: f64,
}

/// Accuracy per language, most examples first (pure).
pub fn per_language(
    langs: &[String],
    gold: &[String],
    pred: &[String],
) -> Vec<(String, usize, f64)> {
    let mut by: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for ((l, g), p) in langs.iter().zip(gold).zip(pred) {
        let e = by.entry(if l.is_empty() { "?" } else { l }).or_default();
        e.0 += 1;
        e.1 += usize::from(g == p);
    }
    let mut out: Vec<(String, usize, f64)> = by
        .into_iter()
        .map(|(l, (n, ok))| (l.to_string(), n, ok as f64 / n as f64))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

/// Scores predictions against gold labels (pure).
pub fn score(labels: &[String], gold: &[String], pred: &[String], latencies_ms: &[u32]) -> Report {
    let n = gold.len();
    let col = |l: &str| labels.iter().position(|x| x == l).unwrap_or(labels.len());
    let mut confusion = vec![vec![0usize; labels.len() + 1]; labels.len()];
    let mut correct = 0;
    for (g, p) in gold.iter().zip(pred) {
        if g == p {
            correct += 1;
        }
        if let Some(r) = labels.iter().position(|x| x == g) {
            confusion[r][col(p)] += 1;
        }
    }
    let per_label = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let tp = confusion[i][i];
            let predicted: usize = confusion.iter().map(|row| row[i]).sum();
            let support: usize = confusion[i].iter().sum();
            LabelScore {
                label: l.clone(),
                precision: if predicted == 0 {
                    0.0
                } else {
                    tp as f64 / predicted as f64
                },
                recall: if support == 0 {
                    0.0
                } else {
                    tp as f64 / support as f64
                },
                support,
            }
        })
        .collect();
    let mut lat = latencies_ms.to_vec();
    lat.sort_unstable();
    let q = |q: f64| {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    Report {
        model: String::new(),
        prompt_id: String::new(),
        mode: String::new(),
        mean_confidence: None,
        per_language: Vec::new(),
        examples: n,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        per_label,
        confusion,
        labels: labels.to_vec(),
        unparseable_share: if n == 0 {
            0.0
        } else {
            pred.iter().filter(|p| p.as_str() == "unknown").count() as f64 / n as f64
        },
        latency_p50_ms: q(0.50),
        latency_p99_ms: q(0.99),
        requests: 0,
        errors: 0,
        posts_per_s: 0.0,
    }
}

/// Classifies every example with `cfg` (concurrency = `cfg.concurrency`); returns the report
/// and each example's outcome.
pub async fn run(cfg: &LlmConfig, examples: &[Example]) -> Result<(Report, Vec<Outcome>), String> {
    let client = Arc::new(LlmClient::new(cfg).map_err(|e| e.to_string())?);
    let breaker = Arc::new(CircuitBreaker::new(
        cfg.circuit_failures,
        cfg.circuit_cooldown.0,
    ));
    let counters = Arc::new(LlmCounters::default());
    let limiter = Arc::new(crate::flow::limiter::Limiter::new(
        cfg.concurrency,
        cfg.adaptive_concurrency,
    ));
    let policy = RetryPolicy {
        backoff_initial: cfg.backoff_initial.0,
        backoff_max: cfg.circuit_cooldown.0.max(cfg.backoff_initial.0),
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ex) in examples.iter().enumerate() {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (client, breaker, limiter, counters, text) = (
            client.clone(),
            breaker.clone(),
            limiter.clone(),
            counters.clone(),
            ex.text.clone(),
        );
        tasks.spawn(async move {
            let out = classify(
                &client,
                &breaker,
                &limiter,
                &counters,
                &policy,
                &text,
                &tracing::Span::none(),
            )
            .await;
            drop(permit);
            (i, out)
        });
    }
    let mut results = vec![None; examples.len()];
    while let Some(r) = tasks.join_next().await {
        let (i, out) = r.map_err(|e| e.to_string())?;
        results[i] = Some(out);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let outs: Vec<_> = results.into_iter().flatten().collect();
    let labels: Vec<String> = client.labels().iter().map(str::to_string).collect();
    let gold: Vec<String> = examples.iter().map(|e| e.gold.clone()).collect();
    let pred: Vec<String> = outs.iter().map(|o| o.label.clone()).collect();
    let lat: Vec<u32> = outs.iter().map(|o| o.latency_ms).collect();
    let mut r = score(&labels, &gold, &pred, &lat);
    r.model = cfg.model.clone();
    r.prompt_id = client.prompt_id().to_string();
    r.mode = match cfg.mode {
        crate::config::LlmMode::Generate => "generate".into(),
        crate::config::LlmMode::Score if cfg.calibration.is_empty() => "score".into(),
        crate::config::LlmMode::Score => "score+calibration".into(),
    };
    let langs: Vec<String> = examples.iter().map(|e| e.language.clone()).collect();
    r.per_language = per_language(&langs, &gold, &pred);
    let conf: Vec<f64> = outs
        .iter()
        .filter_map(|o| o.confidence.map(f64::from))
        .collect();
    r.mean_confidence = (!conf.is_empty()).then(|| conf.iter().sum::<f64>() / conf.len() as f64);
    r.requests = counters.requests.load(std::sync::atomic::Ordering::Relaxed);
    r.errors = counters.errors.load(std::sync::atomic::Ordering::Relaxed);
    r.posts_per_s = if elapsed > 0.0 {
        examples.len() as f64 / elapsed
    } else {
        0.0
    };
    Ok((r, outs))
}

/// A calibration fitted on a score-mode run: its offsets (fitted on every example) and the
/// report of the run decided again with offsets fitted without each example's own gold
/// label (contextual: needs none; labeled: 2-fold, each half decided with the offsets
/// fitted on the other), so that the accuracy is not the fit's own.
pub fn recalibrate(
    base: &Report,
    labels: &[String],
    examples: &[Example],
    outs: &[Outcome],
    labeled: bool,
) -> Option<(Vec<f64>, Report)> {
    // Posts without scores (refused, or no label token twice) keep their `unknown`; the
    // fits use the others, and a labeled fit only those whose gold label is a label.
    let scores: Vec<Option<&LabelScores>> = outs.iter().map(|o| o.scores.as_ref()).collect();
    let gold_idx: Vec<Option<usize>> = examples
        .iter()
        .map(|e| labels.iter().position(|l| *l == e.gold))
        .collect();
    let usable = |i: &usize| scores[*i].is_some() && (!labeled || gold_idx[*i].is_some());
    let fit = |idx: &[usize]| -> Vec<f64> {
        let idx: Vec<usize> = idx.iter().copied().filter(usable).collect();
        let s: Vec<LabelScores> = idx.iter().filter_map(|&i| scores[i].cloned()).collect();
        if labeled {
            let g: Vec<usize> = idx.iter().filter_map(|&i| gold_idx[i]).collect();
            llm_score::fit_labeled(&s, &g)
        } else {
            llm_score::fit_contextual(&s)
        }
    };
    let all: Vec<usize> = (0..outs.len().min(examples.len())).collect();
    if !all.iter().any(usable) {
        return None;
    }
    let offsets = fit(&all);
    let mut pred: Vec<String> = outs.iter().map(|o| o.label.clone()).collect();
    let mut conf = Vec::new();
    let halves: Vec<Vec<usize>> = if labeled {
        vec![
            all.iter().copied().filter(|i| i % 2 == 0).collect(),
            all.iter().copied().filter(|i| i % 2 == 1).collect(),
        ]
    } else {
        vec![all.clone()]
    };
    for (h, part) in halves.iter().enumerate() {
        let off = if labeled {
            fit(&halves[1 - h])
        } else {
            offsets.clone()
        };
        for &i in part {
            if let Some(s) = scores[i] {
                let (l, p) = llm_score::decide(s, &off);
                pred[i] = labels[l].clone();
                conf.push(p);
            }
        }
    }
    let gold: Vec<String> = examples.iter().map(|e| e.gold.clone()).collect();
    let lat: Vec<u32> = outs.iter().map(|o| o.latency_ms).collect();
    let mut r = score(labels, &gold, &pred, &lat);
    let langs: Vec<String> = examples.iter().map(|e| e.language.clone()).collect();
    r.per_language = per_language(&langs, &gold, &pred);
    r.model = base.model.clone();
    r.prompt_id = base.prompt_id.clone();
    r.mode = if labeled {
        "score+labeled (2-fold)".into()
    } else {
        "score+contextual".into()
    };
    r.mean_confidence = (!conf.is_empty()).then(|| conf.iter().sum::<f64>() / conf.len() as f64);
    r.requests = base.requests;
    r.errors = base.errors;
    r.posts_per_s = base.posts_per_s;
    Some((offsets, r))
}

/// The `[pipeline.llm]` line that applies `offsets`.
pub fn calibration_line(labels: &[String], offsets: &[f64]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .zip(offsets)
        .map(|(l, o)| format!("{l} = {o:.3}"))
        .collect();
    format!("calibration = {{ {} }}", parts.join(", "))
}

/// One line of the side-by-side table.
pub fn summary_line(r: &Report) -> String {
    let langs: Vec<String> = r
        .per_language
        .iter()
        .take(4)
        .map(|(l, n, a)| format!("{l} {:.0}% ({n})", a * 100.0))
        .collect();
    format!(
        "{:<16} {:<24} {:<16} {:>8.1}% {:>11.1}% {:>10} {:>8.2}  {}",
        r.model,
        r.mode,
        r.prompt_id,
        r.accuracy * 100.0,
        r.unparseable_share * 100.0,
        r.mean_confidence
            .map_or("-".to_string(), |c| format!("{:.2}", c)),
        r.posts_per_s,
        langs.join(", ")
    )
}

/// The header of [`summary_line`]s.
pub const SUMMARY_HEADER: &str = "model            mode                     prompt           accuracy  unparseable confidence  posts/s  by language";

/// The report as a terminal table.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "model {}  mode {}  prompt {}  examples {}",
        r.model, r.mode, r.prompt_id, r.examples
    );
    let _ = writeln!(
        o,
        "accuracy {:.1}%  unparseable {:.1}%  latency p50 {} ms  p99 {} ms  {:.2} posts/s  requests {}  errors {}",
        r.accuracy * 100.0,
        r.unparseable_share * 100.0,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.posts_per_s,
        r.requests,
        r.errors
    );
    if let Some(c) = r.mean_confidence {
        let _ = writeln!(o, "mean confidence {c:.3}");
    }
    let langs: Vec<String> = r
        .per_language
        .iter()
        .map(|(l, n, a)| format!("{l} {:.1}% ({n})", a * 100.0))
        .collect();
    if !langs.is_empty() {
        let _ = writeln!(o, "by language: {}", langs.join(", "));
    }
    let _ = writeln!(
        o,
        "{:<12} {:>9} {:>7} {:>8}",
        "label", "precision", "recall", "support"
    );
    for s in &r.per_label {
        let _ = writeln!(
            o,
            "{:<12} {:>8.1}% {:>6.1}% {:>8}",
            s.label,
            s.precision * 100.0,
            s.recall * 100.0,
            s.support
        );
    }
    let _ = write!(o, "confusion (rows: gold, columns: predicted)\n{:<12}", "");
    for l in r.labels.iter().map(String::as_str).chain(["unknown"]) {
        let _ = write!(o, " {l:>9}");
    }
    o.push('\n');
    for (l, row) in r.labels.iter().zip(&r.confusion) {
        let _ = write!(o, "{l:<12}");
        for c in row {
            let _ = write!(o, " {c:>9}");
        }
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn scores() {
        let labels = s(&["positive", "negative", "neutral"]);
        let gold = s(&["positive", "positive", "negative", "neutral"]);
        let pred = s(&["positive", "negative", "negative", "unknown"]);
        let r = score(&labels, &gold, &pred, &[10, 20, 30, 400]);
        assert_eq!(r.accuracy, 0.5);
        assert_eq!(
            r.per_label[0],
            LabelScore {
                label: "positive".into(),
                precision: 1.0,
                recall: 0.5,
                support: 2
            }
        );
        assert_eq!(r.per_label[1].precision, 0.5);
        assert_eq!(
            r.confusion[2],
            vec![0, 0, 0, 1],
            "unknown has its own column"
        );
        assert_eq!(r.unparseable_share, 0.25);
        assert_eq!((r.latency_p50_ms, r.latency_p99_ms), (20, 400));
        assert!(render(&r).contains("accuracy 50.0%"));
    }

    #[test]
    fn accuracy_per_language_most_examples_first() {
        let langs = s(&["en", "de", "en", "", "en"]);
        let gold = s(&["a", "a", "b", "a", "a"]);
        let pred = s(&["a", "b", "b", "a", "b"]);
        assert_eq!(
            per_language(&langs, &gold, &pred),
            vec![
                ("en".to_string(), 3, 2.0 / 3.0),
                ("?".to_string(), 1, 1.0),
                ("de".to_string(), 1, 0.0)
            ]
        );
    }

    #[test]
    fn recalibration_decides_again_from_the_kept_scores() {
        let labels = s(&["positive", "negative", "neutral"]);
        // Every post leans positive; the gold label is the runner-up's margin.
        let mk = |g: usize| {
            let mut v = vec![-0.3, -2.0, -2.2];
            if g > 0 {
                v[g] += 1.5;
            }
            LabelScores(v)
        };
        let golds: Vec<usize> = (0..40).map(|i| i % 3).collect();
        let examples: Vec<Example> = golds
            .iter()
            .map(|&g| Example {
                text: String::new(),
                gold: labels[g].clone(),
                language: "en".into(),
            })
            .collect();
        let outs: Vec<Outcome> = golds
            .iter()
            .map(|&g| Outcome {
                label: "positive".into(),
                attempts: 1,
                latency_ms: 5,
                unparsed: 0,
                confidence: Some(0.6),
                error: None,
                scores: Some(mk(g)),
            })
            .collect();
        // One post the server refused: no scores; it stays `unknown`.
        let mut outs = outs;
        outs[3].label = "unknown".into();
        outs[3].scores = None;
        let pred: Vec<String> = outs.iter().map(|o| o.label.clone()).collect();
        let gold: Vec<String> = examples.iter().map(|e| e.gold.clone()).collect();
        let base = score(&labels, &gold, &pred, &[]);
        let (off, r) = recalibrate(&base, &labels, &examples, &outs, true).unwrap();
        assert_eq!(r.accuracy, 39.0 / 40.0, "{off:?}");
        assert_eq!(r.confusion[0][3], 1, "the refused post is still unknown");
        assert!(r.accuracy > base.accuracy);
        assert!(calibration_line(&labels, &off).starts_with("calibration = { positive = 0.000, "));
        let (_, c) = recalibrate(&base, &labels, &examples, &outs, false).unwrap();
        assert!(c.accuracy > base.accuracy, "{}", c.accuracy);
        assert!(c.mean_confidence.unwrap() > 0.0);
    }

    #[test]
    fn empty_set() {
        let r = score(&s(&["a"]), &[], &[], &[]);
        assert_eq!((r.accuracy, r.latency_p99_ms), (0.0, 0));
    }
}
