//! An OTP-style supervisor for ractor actors: one_for_one, one_for_all and rest_for_one;
//! permanent, transient and temporary children; restart intensity (more than
//! `max_restarts` within `within` escalates to the parent by failing); exponential backoff
//! scheduled with `send_after`; shutdown in reverse start order with a timeout.
//!
//! ractor gives links and supervision events only: a restart here is a new spawn from the
//! child's builder. A kill arrives as `ActorTerminated("killed")` and counts as abnormal.
//!
//! Each child's errors are classified by the child's own [`Classify`] function (see
//! [`super::fault`]). Outages are not crashes: a child that ran healthily once (for
//! `HEALTHY_AFTER`) and then fails, or fails to start, because a server it needs is away is
//! restarted with backoff (up to `backoff_max`) for as long as the outage lasts, without
//! counting against the restart intensity. A server missing from the start still escalates,
//! with an error that names it. A permanent error escalates at once.
//!
//! Must never: sleep in a handler, restart a child while its previous instance may still run
//! (it is stopped and awaited first), or crash because a restart attempt failed (that counts
//! as one more failure).

use super::fault::{Classify, ErrorClass};
use crate::config::SupervisionConfig;
use crate::runtime::registry::{ActorState, Registry};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    OneForOne,
    OneForAll,
    RestForOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted.
    Permanent,
    /// Restarted only after an abnormal exit (failure, panic, kill).
    Transient,
    /// Never restarted.
    Temporary,
}

pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;
/// Spawns the child linked to the given supervisor cell.
pub type StartFn = Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>;

#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub restart: Restart,
    pub start: StartFn,
    /// The class of the child's errors (its own error types; see [`super::fault`]).
    pub classify: Classify,
}

impl ChildSpec {
    /// A child whose errors are classified by [`super::fault::classify`] (a
    /// [`super::fault::Classified`] error has its class, anything else is transient).
    pub fn new(name: impl Into<String>, restart: Restart, start: StartFn) -> ChildSpec {
        ChildSpec {
            name: name.into(),
            restart,
            start,
            classify: super::fault::classify,
        }
    }

    /// The same child, its errors classified by the actor's own function.
    pub fn classified_by(self, classify: Classify) -> ChildSpec {
        ChildSpec { classify, ..self }
    }
}

pub struct SupervisorArgs {
    /// Path of this supervisor in the tree (`root`, `root/cdc`).
    pub path: String,
    pub strategy: Strategy,
    pub policy: SupervisionConfig,
    pub children: Vec<ChildSpec>,
    pub registry: Arc<Registry>,
    /// How long each child may take to stop gracefully.
    pub shutdown_timeout: Duration,
}

pub enum SupervisorMsg {
    /// Start these children (indexes in start order), scheduled after a backoff.
    Restart(Vec<usize>),
    /// Paths and whether they run, for tests and status.
    Children(ractor::RpcReplyPort<Vec<(String, Option<ActorCell>)>>),
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    /// Exited and not to be restarted.
    done: bool,
    /// When the running instance started.
    started_at: Option<Instant>,
    /// An instance ran for `HEALTHY_AFTER` at least once: its outages are waited out.
    healthy_once: bool,
    /// Restarts in a row because of an outage (for the backoff).
    outage_streak: u32,
}

impl Child {
    /// The running instance ended: whether it had run healthily (for `HEALTHY_AFTER`), which
    /// makes the child's later outages waited out.
    fn run_ended(&mut self) -> bool {
        let healthy = self
            .started_at
            .take()
            .is_some_and(|t| t.elapsed() >= HEALTHY_AFTER);
        self.healthy_once |= healthy;
        healthy
    }
}

/// How long a child must have run before its outages stop counting as failures.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The class of a failed start: the actor's error, classified by the child's function.
fn start_class(e: &SpawnErr, classify: Classify) -> ErrorClass {
    match e {
        SpawnErr::StartupFailed(inner) => classify(inner.as_ref()),
        _ => ErrorClass::Transient,
    }
}

pub struct SupervisorState {
    args_path: String,
    strategy: Strategy,
    policy: SupervisionConfig,
    children: Vec<Child>,
    restarts: VecDeque<Instant>,
    registry: Arc<Registry>,
    shutdown_timeout: Duration,
}

impl SupervisorState {
    fn child_path(&self, i: usize) -> String {
        format!("{}/{}", self.args_path, self.children[i].spec.name)
    }
}

pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.registry
            .set_state(&args.path, ActorState::Running, None);
        let mut state = SupervisorState {
            args_path: args.path,
            strategy: args.strategy,
            policy: args.policy,
            children: args
                .children
                .into_iter()
                .map(|spec| Child {
                    spec,
                    cell: None,
                    done: false,
                    started_at: None,
                    healthy_once: false,
                    outage_streak: 0,
                })
                .collect(),
            restarts: VecDeque::new(),
            registry: args.registry,
            shutdown_timeout: args.shutdown_timeout,
        };
        let all: Vec<usize> = (0..state.children.len()).collect();
        start_children(&myself, &mut state, &all).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(indexes) => start_children(&myself, state, &indexes).await,
            SupervisorMsg::Children(reply) => {
                let list = (0..state.children.len())
                    .map(|i| (state.child_path(i), state.children[i].cell.clone()))
                    .collect();
                let _ = reply.send(list);
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, abnormal, reason, err) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let reason = err.to_string();
                (cell, true, reason, Some(err))
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let abnormal = reason.is_some();
                (
                    cell,
                    abnormal,
                    reason.unwrap_or_else(|| "stopped".into()),
                    None,
                )
            }
            _ => return Ok(()),
        };
        // Exits of instances we stopped ourselves are not in the table any more.
        let Some(i) = state
            .children
            .iter()
            .position(|c| c.cell.as_ref().map(|x| x.get_id()) == Some(cell.get_id()))
        else {
            return Ok(());
        };
        state.children[i].cell = None;
        let class = err.map_or(ErrorClass::Transient, |e| {
            (state.children[i].spec.classify)(e.as_ref())
        });
        child_exited(&myself, state, i, abnormal, reason, class).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let all: Vec<usize> = (0..state.children.len()).collect();
        stop_children(state, &all).await;
        state
            .registry
            .set_state(&state.args_path, ActorState::Stopped, None);
        Ok(())
    }
}

async fn child_exited(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    i: usize,
    abnormal: bool,
    reason: String,
    class: ErrorClass,
) -> Result<(), ActorProcessingErr> {
    let path = state.child_path(i);
    let child = &mut state.children[i];
    if child.run_ended() {
        child.outage_streak = 0;
    }
    if class == ErrorClass::Permanent {
        let msg = format!(
            "{}: {path} failed with an error a restart cannot cure; stopping: {reason}",
            state.args_path
        );
        return give_up(state, &path, &reason, msg).await;
    }
    let waited_out = class == ErrorClass::Outage && child.healthy_once;
    let restart = match state.children[i].spec.restart {
        Restart::Permanent => true,
        Restart::Transient => abnormal,
        Restart::Temporary => false,
    };
    if waited_out {
        tracing::warn!(actor = %path, reason = %reason, "a server it needs is away: restarting until it is back (not counted against the restart intensity)");
    } else if abnormal {
        tracing::warn!(actor = %path, reason = %reason, "actor exited abnormally");
    } else {
        tracing::info!(actor = %path, "actor stopped");
    }
    if !restart {
        state.children[i].done = true;
        state.registry.set_state(
            &path,
            if abnormal {
                ActorState::Failed
            } else {
                ActorState::Stopped
            },
            abnormal.then(|| reason.clone()),
        );
        if state.children.iter().all(|c| c.done) {
            myself.stop(Some(if abnormal {
                format!("last child {path} failed: {reason}")
            } else {
                "all children stopped".into()
            }));
        }
        return Ok(());
    }
    if waited_out {
        return restart_after_outage(myself, state, i, reason).await;
    }
    state.children[i].outage_streak = 0;
    // Restart intensity: more than max_restarts within the window escalates.
    let now = Instant::now();
    state.restarts.push_back(now);
    while state
        .restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > state.policy.within.0)
    {
        state.restarts.pop_front();
    }
    let recent = state.restarts.len() as u32;
    if recent > state.policy.max_restarts {
        let msg = format!(
            "{}: {} restarts within {:?} (limit {}); giving up. Last failure of {path}: {reason}",
            state.args_path, recent, state.policy.within.0, state.policy.max_restarts
        );
        return give_up(state, &path, &reason, msg).await;
    }
    schedule_restart(myself, state, i, &reason, recent.saturating_sub(1), None).await
}

/// Escalates to the parent: marks the child failed, stops every child, and fails with `msg`.
async fn give_up(
    state: &mut SupervisorState,
    path: &str,
    reason: &str,
    msg: String,
) -> Result<(), ActorProcessingErr> {
    state
        .registry
        .set_state(path, ActorState::Failed, Some(reason.to_string()));
    tracing::error!(supervisor = %state.args_path, "{msg}");
    state.registry.escalated(&state.args_path);
    let all: Vec<usize> = (0..state.children.len()).collect();
    stop_children(state, &all).await;
    Err(msg.into())
}

/// A healthy child failed because a server is away: restart it (and its dependents) with a
/// backoff of its own, without counting against the intensity.
async fn restart_after_outage(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    i: usize,
    reason: String,
) -> Result<(), ActorProcessingErr> {
    let streak = state.children[i].outage_streak;
    state.children[i].outage_streak = streak.saturating_add(1);
    schedule_restart(myself, state, i, &reason, streak, Some("outage")).await
}

/// Stops the children the strategy restarts with `i`, and starts them again after
/// `backoff_initial` × 2^`exp` (at most `backoff_max`).
async fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    i: usize,
    reason: &str,
    exp: u32,
    kind: Option<&'static str>,
) -> Result<(), ActorProcessingErr> {
    let path = state.child_path(i);
    let affected: Vec<usize> = match state.strategy {
        Strategy::OneForOne => vec![i],
        Strategy::OneForAll => (0..state.children.len())
            .filter(|&j| !state.children[j].done)
            .collect(),
        Strategy::RestForOne => (i..state.children.len())
            .filter(|&j| !state.children[j].done)
            .collect(),
    };
    let others: Vec<usize> = affected.iter().copied().filter(|&j| j != i).collect();
    stop_children(state, &others).await;
    for &j in &affected {
        let p = state.child_path(j);
        state.registry.set_state(
            &p,
            ActorState::Restarting,
            (j == i).then(|| reason.to_string()),
        );
        let kind = match (j == i, kind, reason) {
            (false, _, _) => "sibling",
            (true, Some(k), _) => k,
            (true, None, "killed") => "killed",
            (true, None, r) if r.starts_with("start failed") => "start_failed",
            (true, None, _) => "failed",
        };
        state.registry.restarted(&p, kind);
    }
    let delay = state
        .policy
        .backoff_initial
        .0
        .saturating_mul(1 << exp.min(16))
        .min(state.policy.backoff_max.0);
    tracing::info!(supervisor = %state.args_path, actor = %path, ?delay, "restart scheduled");
    myself.send_after(delay, move || SupervisorMsg::Restart(affected));
    Ok(())
}

async fn start_children(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    indexes: &[usize],
) -> Result<(), ActorProcessingErr> {
    for (n, &i) in indexes.iter().enumerate() {
        if state.children[i].done || state.children[i].cell.is_some() {
            continue;
        }
        let path = state.child_path(i);
        state.registry.set_state(&path, ActorState::Starting, None);
        match (state.children[i].spec.start)(myself.get_cell()).await {
            Ok(cell) => {
                state.children[i].cell = Some(cell);
                state.children[i].started_at = Some(Instant::now());
                state.registry.set_state(&path, ActorState::Running, None);
            }
            Err(e) => {
                // A failed start is one more failure: it counts against the intensity (unless
                // it is an outage waited out) and the children after it (in this batch) wait
                // for the next attempt.
                let class = start_class(&e, state.children[i].spec.classify);
                let reason = format!("start failed: {e}");
                let rest: Vec<usize> = indexes[n + 1..].to_vec();
                for &j in &rest {
                    state
                        .registry
                        .set_state(&state.child_path(j), ActorState::Restarting, None);
                }
                return child_exited_with_pending(myself, state, i, reason, rest, class).await;
            }
        }
    }
    Ok(())
}

/// A child failed to start; `pending` were to be started after it.
async fn child_exited_with_pending(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    i: usize,
    reason: String,
    pending: Vec<usize>,
    class: ErrorClass,
) -> Result<(), ActorProcessingErr> {
    child_exited(myself, state, i, true, reason, class).await?;
    // one_for_one only schedules `i`: the not-yet-started children must come with it.
    if state.strategy == Strategy::OneForOne && !pending.is_empty() {
        myself.send_after(state.policy.backoff_initial.0, move || {
            SupervisorMsg::Restart(pending)
        });
    }
    Ok(())
}

/// Stops children in reverse start order, each gracefully within the shutdown timeout.
async fn stop_children(state: &mut SupervisorState, indexes: &[usize]) {
    for &i in indexes.iter().rev() {
        if let Some(cell) = state.children[i].cell.take() {
            state.children[i].run_ended();
            let path = state.child_path(i);
            if cell
                .stop_and_wait(Some("supervisor".into()), Some(state.shutdown_timeout))
                .await
                .is_err()
            {
                tracing::warn!(actor = %path, "did not stop in time: killed");
                let _ = cell.kill_and_wait(Some(Duration::from_secs(5))).await;
            }
            state.registry.set_state(&path, ActorState::Stopped, None);
        }
    }
}

/// The children of a supervisor: their paths and, when running, their cells.
pub async fn children(sup: &ActorRef<SupervisorMsg>) -> Vec<(String, Option<ActorCell>)> {
    ractor::call!(sup, SupervisorMsg::Children).unwrap_or_default()
}

/// Finds a running actor by its path (`root/cdc/sink`) under `root`.
pub async fn find_actor(root: &ActorRef<SupervisorMsg>, path: &str) -> Option<ActorCell> {
    let mut sup = root.clone();
    loop {
        let mut next = None;
        for (p, cell) in children(&sup).await {
            if p == path {
                return cell;
            }
            if path.starts_with(&format!("{p}/")) {
                next = cell;
            }
        }
        sup = ActorRef::<SupervisorMsg>::from(next?);
    }
}

/// Spawns `actor` linked to the supervisor `sup`: the body of every child's start function.
pub fn spawn_child<A: Actor>(actor: A, args: A::Arguments, sup: ActorCell) -> StartFuture {
    Box::pin(async move {
        Ok(Actor::spawn_linked(None, actor, args, sup)
            .await?
            .0
            .get_cell())
    })
}

/// A child spec's start function for a nested supervisor over `children`.
pub fn supervisor_start(
    path: String,
    strategy: Strategy,
    policy: SupervisionConfig,
    children: Vec<ChildSpec>,
    registry: Arc<Registry>,
    shutdown_timeout: Duration,
) -> StartFn {
    Arc::new(move |sup| {
        let args = SupervisorArgs {
            path: path.clone(),
            strategy,
            policy,
            children: children.clone(),
            registry: registry.clone(),
            shutdown_timeout,
        };
        spawn_child(Supervisor, args, sup)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fault::{classified, ErrorClass};

    /// Fails to start with an error of the given class; counts its starts.
    struct Failing;

    impl Actor for Failing {
        type Msg = ();
        type State = ();
        type Arguments = (ErrorClass, Arc<std::sync::atomic::AtomicU32>);

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            (class, starts): Self::Arguments,
        ) -> Result<(), ActorProcessingErr> {
            starts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(classified("refused".into(), class))
        }
    }

    /// Runs a supervisor over one `Failing` child until it gives up; returns its starts.
    async fn starts_until_escalation(class: ErrorClass) -> u32 {
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let s = starts.clone();
        let start: StartFn = Arc::new(move |sup| spawn_child(Failing, (class, s.clone()), sup));
        let ms = crate::config::HumanDuration(Duration::from_millis(1));
        let policy = SupervisionConfig {
            max_restarts: 3,
            within: crate::config::HumanDuration(Duration::from_secs(60)),
            backoff_initial: ms,
            backoff_max: ms,
        };
        let args = SupervisorArgs {
            path: format!("test-{class:?}"),
            strategy: Strategy::OneForOne,
            policy,
            children: vec![ChildSpec::new("child", Restart::Permanent, start)],
            registry: Registry::new(),
            shutdown_timeout: Duration::from_secs(1),
        };
        match Actor::spawn(None, Supervisor, args).await {
            // The first start fails inside the supervisor's own start.
            Err(_) => {}
            Ok((_, handle)) => handle.await.expect("supervisor task"),
        }
        starts.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_permanent_error_escalates_without_a_restart() {
        assert_eq!(starts_until_escalation(ErrorClass::Permanent).await, 1);
        // A transient one is restarted until the intensity is exceeded.
        assert_eq!(starts_until_escalation(ErrorClass::Transient).await, 4);
    }
}
