//! The logs view (`lemming logs NAME`, `GET /api/logs/{agent}`): an agent's
//! runs from `agents/NAME/logs/activity.jsonl`, each run once.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::ViewError;
use crate::activity::{self, Activity, Runs, Tail};
use crate::error::PathError;
use crate::follow::{Follow, Source};
use crate::org::Org;

/// Runs of one agent, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogsView {
    /// Whose log.
    pub agent: String,
    /// The runs. A turn repeated after a crash logs its runs again, marked
    /// `replay`; such a replay is left out when its run was logged before.
    pub runs: Vec<Activity>,
    /// Lines of the log that are not runs, as they are.
    pub not_runs: Vec<String>,
}

impl LogsView {
    /// Keeps the last `n` runs.
    pub fn last(mut self, n: usize) -> LogsView {
        self.runs.drain(..self.runs.len().saturating_sub(n));
        self
    }
}

/// An agent's log read as it grows (`lemming logs -f`): each call to
/// [`LogsFollow::read_new`] returns the runs logged since the last.
#[derive(Debug, Clone)]
pub struct LogsFollow {
    agent: String,
    tail: Tail,
    runs: Runs,
}

impl LogsFollow {
    /// Starts at the beginning of `agent`'s log. An agent whose resume is
    /// invalid still has its log (and that is when it is wanted); a name that
    /// is no agent's is an error.
    pub fn start(org: &Org, agent: &str) -> Result<LogsFollow, ViewError> {
        if !org.broken.contains_key(agent) {
            org.agent(agent)?;
        }
        Ok(LogsFollow { agent: agent.to_string(), tail: Tail::new(&org.layout.root, agent), runs: Runs::default() })
    }

    /// The complete lines logged since the last call (the whole log on the
    /// first), each run once. A log that cannot be read is an error.
    pub fn read_new(&mut self) -> Result<LogsView, ViewError> {
        Ok(self.take_new()?)
    }

    fn take_new(&mut self) -> Result<LogsView, PathError> {
        let mut view = LogsView { agent: self.agent.clone(), runs: Vec::new(), not_runs: Vec::new() };
        for line in self.tail.read_new()? {
            match activity::parse(&line) {
                Some(a) if self.runs.is_new(&a) => view.runs.push(a),
                Some(_) => {}
                None => view.not_runs.push(line),
            }
        }
        Ok(view)
    }

    /// Follows the log from here as it grows (`lemming logs -f`), as
    /// [`crate::follow`] follows anything: woken by a watcher on the log's
    /// folder, rescanned every `poll` (and only rescanned while the folder
    /// does not exist yet).
    pub fn follow(self, org: &Org, poll: Duration) -> Follow<LogsFollow> {
        let log = org.layout.activity_log(&self.agent);
        let dir = log.parent().map(Path::to_path_buf).unwrap_or_else(|| org.layout.root.clone());
        Follow::new(self, &dir, poll)
    }
}

impl Source for LogsFollow {
    /// What was logged since the last call.
    type Item = LogsView;

    /// One view of what was logged since the last call, or none when nothing was.
    fn take(&mut self) -> Result<Vec<LogsView>, PathError> {
        let v = self.take_new()?;
        Ok(if v.runs.is_empty() && v.not_runs.is_empty() { Vec::new() } else { vec![v] })
    }
}

/// The last `n` runs of `agent`.
pub fn logs(org: &Org, agent: &str, n: usize) -> Result<LogsView, ViewError> {
    Ok(LogsFollow::start(org, agent)?.read_new()?.last(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Outcome;
    use crate::views::testing::org_after_one_turn;

    #[test]
    fn logs_shows_each_run_once_and_lines_that_are_not_runs_apart() {
        let (dir, org) = org_after_one_turn();
        let log = activity::path(dir.path(), "manager");
        let first = std::fs::read_to_string(&log).unwrap();
        let mut replay: Activity = activity::parse(first.trim()).unwrap();
        replay.replay = true;
        let mut later = replay.clone();
        later.turn = 2;
        later.replay = false;
        later.outcome = Outcome::Failed;
        let more = [serde_json::to_string(&replay).unwrap(), "torn {".into(), serde_json::to_string(&later).unwrap()];
        std::fs::write(&log, format!("{first}{}\n", more.join("\n"))).unwrap();

        let v = logs(&org, "manager", 20).unwrap();
        let turns: Vec<(u64, Outcome)> = v.runs.iter().map(|a| (a.turn, a.outcome)).collect();
        assert_eq!(turns, [(1, Outcome::Ok), (2, Outcome::Failed)], "the replay of turn 1 is shown once");
        assert_eq!(v.not_runs, ["torn {"]);
        assert_eq!(logs(&org, "manager", 1).unwrap().runs.len(), 1);
        assert_eq!(logs(&org, "manager", 1).unwrap().runs[0].turn, 2, "the last run is kept");
        assert!(logs(&org, "planner", 20).unwrap().runs.is_empty());
        assert!(matches!(logs(&org, "nobody", 20), Err(ViewError::UnknownAgent(_))));
    }

    #[test]
    fn following_returns_only_what_was_logged_since() {
        let (dir, org) = org_after_one_turn();
        let mut follow = LogsFollow::start(&org, "manager").unwrap();
        assert_eq!(follow.read_new().unwrap().runs.len(), 1);
        assert!(follow.read_new().unwrap().runs.is_empty());
        let log = activity::path(dir.path(), "manager");
        let mut run = activity::parse(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
        run.turn = 5;
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str(&(serde_json::to_string(&run).unwrap() + "\n"));
        std::fs::write(&log, text).unwrap();
        let v = follow.read_new().unwrap();
        assert_eq!(v.runs.iter().map(|a| a.turn).collect::<Vec<_>>(), [5]);
    }

    /// `lemming logs -f` follows the log through [`crate::follow`]: a new
    /// run wakes it at once, long before its rescan.
    #[test]
    fn following_is_woken_by_a_new_run_long_before_the_rescan() {
        let (dir, org) = org_after_one_turn();
        let mut start = LogsFollow::start(&org, "manager").unwrap();
        assert_eq!(start.read_new().unwrap().runs.len(), 1);
        let log = activity::path(dir.path(), "manager");
        let mut run = activity::parse(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
        run.turn = 5;
        let line = serde_json::to_string(&run).unwrap() + "\n";
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            // A rescan every minute: only the watcher on the log's folder can make this quick.
            let mut follow = start.follow(&org, Duration::from_secs(60));
            assert!(follow.take().unwrap().is_empty(), "nothing new yet");
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                use std::io::Write;
                std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(line.as_bytes()).unwrap();
            });
            let got = tokio::time::timeout(Duration::from_secs(10), follow.next()).await.expect("not woken").unwrap();
            let turns: Vec<Vec<u64>> = got.iter().map(|v| v.runs.iter().map(|a| a.turn).collect()).collect();
            assert_eq!(turns, [[5]]);
            writer.await.unwrap();
        });
    }

    #[test]
    fn an_agent_with_an_invalid_resume_still_has_its_log() {
        let (dir, _) = org_after_one_turn();
        std::fs::write(dir.path().join("agents/manager/resume.toml"), "name = ").unwrap();
        std::fs::remove_dir_all(dir.path().join("org/state/last-good")).ok();
        let org = Org::load(dir.path()).unwrap();
        assert!(org.broken.contains_key("manager"));
        assert_eq!(logs(&org, "manager", 20).unwrap().runs.len(), 1);
    }
}
