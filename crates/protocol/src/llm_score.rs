//! Classification by label scores (`llm.mode = "score"`), as pure functions: the model is
//! asked for one token with its `top_logprobs`; each label's score is the log-probability
//! mass of the listed tokens that can only begin that label (`Positive`, ` positive`,
//! `pos`…); calibration offsets are added; the label with the highest score wins, and its
//! probability among the labels is the confidence. Also the two ways to fit offsets:
//! contextual (no gold labels: cancel each label's mean score) and on a labeled set (the
//! offsets that classify it best).
//!
//! Must never: panic on any response body, pick a label when no listed token begins any
//! label (that is [`ScoreError::NoLabelToken`], counted by the caller), or let a token that
//! begins two labels (`ne` of `negative` and `neutral`) count for either, unless all but one
//! of them are listed whole (then that model spells them as one token, and `ne` begins the
//! other).

use crate::llm::Labels;
use serde_json::Value;

/// How many alternatives of the first token are asked for (OpenAI's maximum).
pub const TOP_LOGPROBS: u32 = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScoreError {
    #[error("the reply is not JSON")]
    NotJson,
    #[error("the reply has no `choices[0].logprobs.content[0].top_logprobs`: does the server return logprobs?")]
    NoLogprobs,
    #[error("none of the {0} most likely first tokens begins a label")]
    NoLabelToken(usize),
}

/// The scores of one post: per label (in the configured order) the natural log of the
/// probability that the reply begins with it. A label no listed token begins gets the
/// lowest listed log-probability (the most its mass can be).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScores(pub Vec<f64>);

/// The label scores in an OpenAI-compatible chat completion asked with `logprobs: true`,
/// `top_logprobs`, `max_tokens: 1`.
pub fn label_scores(body: &[u8], labels: &Labels) -> Result<LabelScores, ScoreError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| ScoreError::NotJson)?;
    let top = v
        .pointer("/choices/0/logprobs/content/0/top_logprobs")
        .and_then(Value::as_array)
        .ok_or(ScoreError::NoLogprobs)?;
    let listed: Vec<(&str, f64)> = top
        .iter()
        .filter_map(|t| {
            let token = t.get("token")?.as_str()?;
            let lp = t.get("logprob")?.as_f64()?;
            lp.is_finite().then_some((token, lp))
        })
        .collect();
    scores_of(&listed, labels)
}

/// The label scores of a list of (token, log-probability) alternatives.
pub fn scores_of(listed: &[(&str, f64)], labels: &Labels) -> Result<LabelScores, ScoreError> {
    let labels: Vec<&str> = labels.iter().collect();
    let norm: Vec<(String, Form)> = listed.iter().map(|(t, _)| normalise(t)).collect();
    let mut mass: Vec<Vec<f64>> = vec![Vec::new(); labels.len()];
    let mut lowest = f64::INFINITY;
    for ((t, form), (_, lp)) in norm.iter().zip(listed) {
        lowest = lowest.min(*lp);
        // A label listed whole in this token's form (leading space, capital) is one token
        // of this model's vocabulary there: a shorter token in that form that begins it and
        // another label (`Ne` of `Negative` and `Neutral`) begins the other.
        let whole = |l: &str| norm.iter().any(|(u, f)| u == l && f == form);
        if let Some(i) = label_of_token(t, &labels, whole) {
            mass[i].push(*lp);
        }
    }
    if mass.iter().all(Vec::is_empty) {
        return Err(ScoreError::NoLabelToken(listed.len()));
    }
    // A label no listed token begins has less mass than any listed token: below the lowest,
    // so that it never ties with a label that was listed last.
    let floor = lowest - std::f64::consts::LN_2;
    Ok(LabelScores(
        mass.iter()
            .map(|m| if m.is_empty() { floor } else { log_sum_exp(m) })
            .collect(),
    ))
}

/// How a token is written: with a leading space, with a capital first letter.
type Form = (bool, bool);

/// A token without surrounding space, quotes or Markdown, lower-cased, and its form.
fn normalise(token: &str) -> (String, Form) {
    let space = token.starts_with(char::is_whitespace);
    let t = token
        .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '*' | '`'))
        .trim_end();
    let capital = t.starts_with(char::is_uppercase);
    (t.to_lowercase(), (space, capital))
}

/// The label a (normalised) token can only be the beginning of: a whole label, or at least
/// two characters that begin exactly one label, or begin several of which all but one are
/// listed whole in the token's form (`whole`).
fn label_of_token(t: &str, labels: &[&str], whole: impl Fn(&str) -> bool) -> Option<usize> {
    if t.is_empty() {
        return None;
    }
    if let Some(i) = labels.iter().position(|l| *l == t) {
        return Some(i);
    }
    if t.chars().count() < 2 {
        return None;
    }
    let begun: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].starts_with(t))
        .collect();
    match begun.as_slice() {
        [i] => Some(*i),
        [] => None,
        several => {
            let open: Vec<usize> = several
                .iter()
                .copied()
                .filter(|&i| !whole(labels[i]))
                .collect();
            match open.as_slice() {
                [i] => Some(*i),
                _ => None,
            }
        }
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// The winning label (index) after adding `offsets` (one per label, or none), and its
/// probability among the labels (a softmax of the calibrated scores).
pub fn decide(scores: &LabelScores, offsets: &[f64]) -> (usize, f64) {
    if scores.0.is_empty() {
        return (0, 0.0);
    }
    let cal: Vec<f64> = scores
        .0
        .iter()
        .enumerate()
        .map(|(i, s)| s + offsets.get(i).copied().unwrap_or(0.0))
        .collect();
    let mut best = 0;
    for (i, s) in cal.iter().enumerate() {
        if *s > cal[best] {
            best = i;
        }
    }
    let z = log_sum_exp(&cal);
    (best, (cal[best] - z).exp())
}

/// Contextual calibration: offsets that cancel each label's mean log-probability among the
/// labels over unlabeled posts, so that a model's prior toward one label is removed. Sums
/// to zero.
pub fn fit_contextual(all: &[LabelScores]) -> Vec<f64> {
    let Some(k) = all.first().map(|s| s.0.len()) else {
        return Vec::new();
    };
    let mut mean = vec![0.0; k];
    for s in all {
        let z = log_sum_exp(&s.0);
        for (m, x) in mean.iter_mut().zip(&s.0) {
            *m += (x - z) / all.len() as f64;
        }
    }
    let avg = mean.iter().sum::<f64>() / k as f64;
    mean.iter().map(|m| round3(avg - m)).collect()
}

/// Offsets fitted on a labeled set by maximum likelihood: coordinate ascent over a shrinking
/// grid (first label fixed at 0) maximising the mean log-probability of the gold labels among
/// the labels (accuracy breaks ties). Likelihood, not accuracy, is the objective: it is smooth,
/// so offsets fitted on part of a set hold on the rest. Starts from the contextual offsets.
pub fn fit_labeled(all: &[LabelScores], gold: &[usize]) -> Vec<f64> {
    let mut best = fit_contextual(all);
    if best.is_empty() {
        return best;
    }
    let base = best[0];
    for o in best.iter_mut() {
        *o = round3(*o - base);
    }
    let objective = |off: &[f64]| -> (usize, f64) {
        let mut correct = 0;
        let mut ll = 0.0;
        for (s, g) in all.iter().zip(gold) {
            let (p, _) = decide(s, off);
            if p == *g {
                correct += 1;
            }
            let cal: Vec<f64> = s.0.iter().zip(off).map(|(x, o)| x + o).collect();
            ll += cal.get(*g).copied().unwrap_or(0.0) - log_sum_exp(&cal);
        }
        (correct, ll)
    };
    let better = |a: (usize, f64), b: (usize, f64)| {
        a.1 > b.1 + 1e-9 || ((a.1 - b.1).abs() <= 1e-9 && a.0 > b.0)
    };
    let mut cur = objective(&best);
    for step in [1.0, 0.25, 0.05] {
        for _round in 0..20 {
            let mut moved = false;
            for i in 1..best.len() {
                for dir in [-1.0, 1.0] {
                    let mut trial = best.clone();
                    trial[i] = round3(trial[i] + dir * step);
                    let o = objective(&trial);
                    if better(o, cur) {
                        best = trial;
                        cur = o;
                        moved = true;
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
    best
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels::default()
    }

    #[test]
    fn a_label_gathers_every_token_that_can_only_begin_it() {
        let listed = [
            ("Positive", -1.0),
            (" positive", -2.0),
            ("The", -0.5),
            ("ne", -0.7),
            ("Neg", -3.0),
            ("**neutral", -4.0),
        ];
        let s = scores_of(&listed, &labels()).unwrap();
        let pos = ((-1.0f64).exp() + (-2.0f64).exp()).ln();
        assert!((s.0[0] - pos).abs() < 1e-12);
        // `neutral` is listed whole, so `ne` can only begin `negative` here.
        assert!((s.0[1] - log_sum_exp(&[-0.7, -3.0])).abs() < 1e-12);
        assert_eq!(s.0[2], -4.0);
    }

    #[test]
    fn a_prefix_of_two_labels_counts_for_the_one_not_listed_whole_in_its_form() {
        // SmolLM2 spells `Negative` as one token and `Neutral` as `Ne` + `utral`.
        let listed = [
            ("The", -0.9),
            ("Negative", -3.9),
            ("Ne", -4.2),
            ("negative", -5.2),
        ];
        let s = scores_of(&listed, &labels()).unwrap();
        assert!((s.0[1] - log_sum_exp(&[-3.9, -5.2])).abs() < 1e-12);
        assert_eq!(s.0[2], -4.2, "`Ne` begins neutral here");
        assert!(
            s.0[0] < -5.2,
            "positive is not listed: below every listed token"
        );
        // Listed whole only in another form (` neutral` with a space): `Ne` stays ambiguous.
        let s = scores_of(
            &[("Ne", -1.0), (" neutral", -2.0), (" negative", -3.0)],
            &labels(),
        )
        .unwrap();
        assert_eq!((s.0[1], s.0[2]), (-3.0, -2.0));
        // Both listed whole in its form: `ne` is nobody's.
        let s = scores_of(
            &[("negative", -1.0), ("neutral", -2.0), ("ne", -0.5)],
            &labels(),
        )
        .unwrap();
        assert_eq!((s.0[1], s.0[2]), (-1.0, -2.0));
    }

    #[test]
    fn a_label_no_token_begins_gets_the_lowest_listed_score() {
        let s = scores_of(&[("negative", -1.0), ("I", -6.0)], &labels()).unwrap();
        let floor = -6.0 - std::f64::consts::LN_2;
        assert_eq!(s.0, vec![floor, -1.0, floor]);
    }

    #[test]
    fn a_label_listed_last_beats_the_labels_not_listed() {
        let s = scores_of(&[("The", -0.01), ("neutral", -5.0)], &labels()).unwrap();
        assert_eq!(decide(&s, &[]).0, 2);
    }

    #[test]
    fn a_token_that_begins_one_label_counts_even_when_the_label_is_listed_whole() {
        let s = scores_of(&[("positive", -1.0), ("pos", -2.0)], &labels()).unwrap();
        assert!((s.0[0] - log_sum_exp(&[-1.0, -2.0])).abs() < 1e-12);
    }

    #[test]
    fn no_label_token_is_an_error_not_a_guess() {
        assert_eq!(
            scores_of(&[("The", -1.0), ("n", -2.0)], &labels()),
            Err(ScoreError::NoLabelToken(2))
        );
        assert_eq!(label_scores(b"{", &labels()), Err(ScoreError::NotJson));
        assert_eq!(
            label_scores(br#"{"choices":[{"message":{"content":"x"}}]}"#, &labels()),
            Err(ScoreError::NoLogprobs)
        );
    }

    #[test]
    fn reads_an_openai_logprobs_reply() {
        let body = br#"{"choices":[{"message":{"content":"Positive"},"logprobs":{"content":[{"token":"Positive","logprob":-2.3,"top_logprobs":[{"token":"Positive","logprob":-2.3},{"token":"The","logprob":-2.31},{"token":"negative","logprob":-3.2},{"token":"x","logprob":null}]}]}}]}"#;
        let s = label_scores(body, &labels()).unwrap();
        assert_eq!(s.0, vec![-2.3, -3.2, -3.2 - std::f64::consts::LN_2]);
    }

    #[test]
    fn offsets_move_the_decision_and_confidence_is_a_probability() {
        let s = LabelScores(vec![-1.0, -1.5, -3.0]);
        let (i, p) = decide(&s, &[]);
        assert_eq!(i, 0);
        assert!(p > 0.5 && p < 1.0, "{p}");
        let (i, _) = decide(&s, &[0.0, 1.0, 0.0]);
        assert_eq!(i, 1);
        let (_, p) = decide(&LabelScores(vec![-2.0, -2.0, -2.0]), &[]);
        assert!((p - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn contextual_calibration_removes_a_prior() {
        // The model says "positive" about everything; the margins still carry signal.
        let all = vec![
            LabelScores(vec![-0.5, -1.0, -3.0]),
            LabelScores(vec![-0.5, -3.0, -1.2]),
            LabelScores(vec![-0.2, -3.0, -3.0]),
        ];
        let off = fit_contextual(&all);
        assert!(off.iter().sum::<f64>().abs() < 1e-2);
        let picks: Vec<usize> = all.iter().map(|s| decide(s, &off).0).collect();
        assert_eq!(picks, vec![1, 2, 0]);
    }

    #[test]
    fn labeled_calibration_never_does_worse_than_contextual() {
        let all: Vec<LabelScores> = (0..30)
            .map(|i| {
                let g = i % 3;
                let mut v = vec![-1.0, -2.0, -2.5];
                v[g] += 0.6;
                LabelScores(v)
            })
            .collect();
        let gold: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let acc = |off: &[f64]| {
            all.iter()
                .zip(&gold)
                .filter(|(s, g)| decide(s, off).0 == **g)
                .count()
        };
        let fitted = fit_labeled(&all, &gold);
        assert_eq!(fitted[0], 0.0);
        assert!(acc(&fitted) >= acc(&fit_contextual(&all)));
        assert_eq!(acc(&fitted), 30);
        assert!(acc(&[]) < 30, "uncalibrated, the prior wins");
    }
}
