//! Who owns what: session owners, projects, display names, copied runs and the idempotent
//! `copy_weights` answers (PROTOCOL.md 9.10, 9.11, 6.9). Persisted as one JSON file,
//! `{state_dir}/rest/registry.json` (temp file + rename), so ownership survives a restart like
//! the runs and checkpoints it describes.
//!
//! Access rules (the emulator's model of the service's RBAC):
//! * a session, and every training run of it, is owned by the identity that created it
//!   ([`crate::auth::Identity`]); a copied run by the identity that copied it;
//! * a project is created by its first use and owned by that caller; it is accessible to its
//!   owner and its members (`POST /_emulator/projects`); the `default` project (a session
//!   created without one) is accessible to everyone;
//! * `access_scope=owned` lists what the caller owns; `accessible` adds everything in a
//!   (non-default) project the caller can access.

use crate::auth::Identity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The project of a session created without one.
pub const DEFAULT_PROJECT: &str = "default";

/// Longest project id, display name, idempotency key or other free string accepted.
pub const MAX_NAME: usize = 256;

/// Most projects, sessions or copies remembered (new ones are refused beyond it).
pub const MAX_ENTRIES: usize = 1_000_000;

/// What the registry knows of a session beyond [`crate::state::Session`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Owner (`sub` of the creator).
    pub owner: String,
    /// Project, if one was given or assigned.
    pub project_id: Option<String>,
    /// Display name from create_session.
    pub display_name: Option<String>,
}

/// A run created by `copy_weights` (other runs belong to their session).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// Owner.
    pub owner: String,
    /// Project.
    pub project_id: Option<String>,
}

/// A project.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Project {
    /// Owner (first user).
    pub owner: String,
    /// Other users who may use it.
    pub members: BTreeSet<String>,
}

/// One project event, for the audit log.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProjectEvent {
    /// Unix seconds (store clock).
    pub time: f64,
    /// `project_created`, `project_session_assigned`, `project_member_added`.
    pub event: String,
    /// The project.
    pub project_id: String,
    /// Who did it.
    pub actor: String,
    /// The session, for assignments.
    pub session_id: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Tables {
    sessions: BTreeMap<String, SessionInfo>,
    runs: BTreeMap<String, RunInfo>,
    projects: BTreeMap<String, Project>,
    /// (caller, idempotency key) → tinker path of the copy.
    copies: BTreeMap<String, String>,
    project_events: Vec<ProjectEvent>,
}

/// Why a registry change was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// The caller may not use the project (403).
    Forbidden(String),
    /// Invalid input (400).
    Invalid(String),
}

/// The registry.
pub struct Registry {
    file: PathBuf,
    tables: Mutex<Tables>,
    /// Trace-export polls seen per session.
    export_polls: Mutex<BTreeMap<String, u32>>,
    /// How trace exports behave (`POST /_emulator/trace_export`).
    pub export_settings: Mutex<ExportSettings>,
}

/// How `GET sessions/{id}/trace_export` answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportSettings {
    /// Polls answered `pending` before the export is `ready` (default 1).
    pub pending_polls: u32,
    /// When set, the export fails with this error once its pending polls are over.
    pub fail: Option<String>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            pending_polls: 1,
            fail: None,
        }
    }
}

impl Registry {
    /// Loads `{state_dir}/rest/registry.json` (empty when absent or unreadable).
    pub fn open(state_dir: &Path) -> Self {
        let file = state_dir.join("rest").join("registry.json");
        let tables = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Registry {
            file,
            tables: Mutex::new(tables),
            export_polls: Mutex::new(BTreeMap::new()),
            export_settings: Mutex::new(ExportSettings::default()),
        }
    }

    fn save(&self, t: &Tables) {
        let write = || -> std::io::Result<()> {
            let dir = self.file.parent().expect("registry file has a parent");
            std::fs::create_dir_all(dir)?;
            let tmp = dir.join(format!(".registry-{}.tmp", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec(t).unwrap_or_default())?;
            std::fs::rename(&tmp, &self.file)
        };
        if let Err(e) = write() {
            eprintln!("tinkex-emulator: cannot persist the registry: {e}");
        }
    }

    /// Checks a project id: non-empty, at most [`MAX_NAME`] bytes, no control characters.
    pub fn check_project_id(id: &str) -> Result<(), Denied> {
        if id.is_empty() || id.len() > MAX_NAME || id.chars().any(char::is_control) {
            return Err(Denied::Invalid(format!(
                "invalid project_id {:?}: 1 to {MAX_NAME} printable characters",
                id.chars().take(40).collect::<String>()
            )));
        }
        Ok(())
    }

    fn can_use(t: &Tables, who: &str, project: &str) -> bool {
        project == DEFAULT_PROJECT
            || t.projects
                .get(project)
                .is_none_or(|p| p.owner == who || p.members.contains(who))
    }

    /// Whether `who` may use `project` (an unknown project can be created by anyone).
    pub fn can_use_project(&self, who: &str, project: &str) -> bool {
        Self::can_use(&self.tables.lock().unwrap(), who, project)
    }

    /// Whether `project` exists (was used) and `who` may list it.
    pub fn can_list_project(&self, who: &str, project: &str) -> bool {
        let t = self.tables.lock().unwrap();
        project == DEFAULT_PROJECT
            || t.projects
                .get(project)
                .is_some_and(|p| p.owner == who || p.members.contains(who))
    }

    /// Uses a project on behalf of `who`: creates it when new, refuses a foreign one.
    fn use_project(t: &mut Tables, who: &str, project: &str, now: f64) -> Result<(), Denied> {
        Self::check_project_id(project)?;
        if !Self::can_use(t, who, project) {
            return Err(Denied::Forbidden(format!(
                "no access to project {project:?}"
            )));
        }
        if project != DEFAULT_PROJECT && !t.projects.contains_key(project) {
            if t.projects.len() >= MAX_ENTRIES {
                return Err(Denied::Invalid("too many projects".into()));
            }
            t.projects.insert(
                project.to_string(),
                Project {
                    owner: who.to_string(),
                    members: BTreeSet::new(),
                },
            );
            push_event(t, now, "project_created", project, who, None);
        }
        Ok(())
    }

    /// Uses a project on behalf of `who` (created, owned by `who`, on first use); refuses a
    /// foreign one.
    pub fn claim_project(&self, who: &str, project: &str, now: f64) -> Result<(), Denied> {
        let mut t = self.tables.lock().unwrap();
        Self::use_project(&mut t, who, project, now)?;
        self.save(&t);
        Ok(())
    }

    /// Checks a create_session's project before the session exists.
    pub fn check_new_session(&self, who: &Identity, project: Option<&str>) -> Result<(), Denied> {
        match project {
            Some(p) => {
                Self::check_project_id(p)?;
                if self.can_use_project(&who.user_urn, p) {
                    Ok(())
                } else {
                    Err(Denied::Forbidden(format!("no access to project {p:?}")))
                }
            }
            None => Ok(()),
        }
    }

    /// Records a new session's owner, project and display name.
    pub fn add_session(
        &self,
        session_id: &str,
        who: &Identity,
        project: Option<String>,
        display_name: Option<String>,
        now: f64,
    ) {
        let mut t = self.tables.lock().unwrap();
        if let Some(p) = &project {
            if Self::use_project(&mut t, &who.user_urn, p, now).is_err() {
                return;
            }
        }
        if t.sessions.len() < MAX_ENTRIES {
            t.sessions.insert(
                session_id.to_string(),
                SessionInfo {
                    owner: who.user_urn.clone(),
                    project_id: project,
                    display_name,
                },
            );
        }
        self.save(&t);
    }

    /// A session's registry entry (`None`: created before the registry knew it; such
    /// sessions are visible to everyone).
    pub fn session(&self, session_id: &str) -> Option<SessionInfo> {
        self.tables
            .lock()
            .unwrap()
            .sessions
            .get(session_id)
            .cloned()
    }

    /// Owner and project of a run: its copy entry, else its session's.
    pub fn run(&self, run_id: &str) -> Option<RunInfo> {
        let t = self.tables.lock().unwrap();
        if let Some(r) = t.runs.get(run_id) {
            return Some(r.clone());
        }
        let session = run_id.rsplit_once(":train:").map(|(s, _)| s)?;
        t.sessions.get(session).map(|s| RunInfo {
            owner: s.owner.clone(),
            project_id: s.project_id.clone(),
        })
    }

    /// Records a copied run.
    pub fn add_run(&self, run_id: &str, info: RunInfo) {
        let mut t = self.tables.lock().unwrap();
        if t.runs.len() < MAX_ENTRIES {
            t.runs.insert(run_id.to_string(), info);
        }
        self.save(&t);
    }

    /// Whether `who` owns a session/run with this owner (unknown owner: everyone).
    pub fn owns(owner: Option<&str>, who: &str) -> bool {
        owner.is_none_or(|o| o == who)
    }

    /// Whether `who` may see something owned by `owner` in `project` with `access_scope`
    /// (`owned` or `accessible`).
    pub fn visible(
        &self,
        owner: Option<&str>,
        project: Option<&str>,
        who: &str,
        scope: Scope,
    ) -> bool {
        if Self::owns(owner, who) {
            return true;
        }
        // Another user's default project is theirs alone.
        scope == Scope::Accessible
            && project.is_some_and(|p| p != DEFAULT_PROJECT && self.can_list_project(who, p))
    }

    /// `PUT sessions/{id}/project`: moves a session into a project (once; a session in a
    /// project cannot be moved out of it).
    pub fn assign_project(
        &self,
        session_id: &str,
        who: &str,
        project: &str,
        now: f64,
    ) -> Result<(), Denied> {
        let mut t = self.tables.lock().unwrap();
        let current = t
            .sessions
            .get(session_id)
            .map(|s| s.project_id.clone())
            .unwrap_or_default();
        match current.as_deref() {
            Some(p) if p == project => return Ok(()),
            Some(p) if p != DEFAULT_PROJECT => {
                return Err(Denied::Invalid(format!(
                    "session {session_id} is in project {p:?}; a session cannot be moved out of a project"
                )))
            }
            _ => {}
        }
        Self::use_project(&mut t, who, project, now)?;
        let entry = t
            .sessions
            .entry(session_id.to_string())
            .or_insert_with(|| SessionInfo {
                owner: who.to_string(),
                project_id: None,
                display_name: None,
            });
        entry.project_id = Some(project.to_string());
        push_event(
            &mut t,
            now,
            "project_session_assigned",
            project,
            who,
            Some(session_id),
        );
        self.save(&t);
        Ok(())
    }

    /// `POST /_emulator/projects`: creates or updates a project's owner and members.
    pub fn set_project(
        &self,
        project: &str,
        owner: Option<&str>,
        members: &[String],
        now: f64,
    ) -> Result<(), Denied> {
        Self::check_project_id(project)?;
        let mut t = self.tables.lock().unwrap();
        let p = t.projects.entry(project.to_string()).or_default();
        if let Some(o) = owner {
            p.owner = o.to_string();
        }
        p.members.extend(members.iter().take(1000).cloned());
        let actor = p.owner.clone();
        push_event(&mut t, now, "project_member_added", project, &actor, None);
        self.save(&t);
        Ok(())
    }

    /// The copy made earlier with this idempotency key by this caller.
    pub fn copy_for_key(&self, who: &str, key: &str) -> Option<String> {
        self.tables
            .lock()
            .unwrap()
            .copies
            .get(&format!("{who}\n{key}"))
            .cloned()
    }

    /// Remembers the copy made with an idempotency key.
    pub fn remember_copy(&self, who: &str, key: &str, tinker_path: &str) {
        let mut t = self.tables.lock().unwrap();
        if t.copies.len() < MAX_ENTRIES {
            t.copies
                .insert(format!("{who}\n{key}"), tinker_path.to_string());
        }
        self.save(&t);
    }

    /// Project events, oldest first.
    pub fn project_events(&self) -> Vec<ProjectEvent> {
        self.tables.lock().unwrap().project_events.clone()
    }

    /// Counts one trace-export poll of a session; answers how many came before it.
    pub fn export_poll(&self, session_id: &str) -> u32 {
        let mut polls = self.export_polls.lock().unwrap();
        if polls.len() >= MAX_ENTRIES && !polls.contains_key(session_id) {
            polls.clear();
        }
        let n = polls.entry(session_id.to_string()).or_insert(0);
        *n += 1;
        *n - 1
    }

    /// Forgets the trace-export polls (a new export starts pending again).
    pub fn reset_exports(&self) {
        self.export_polls.lock().unwrap().clear();
    }

    /// Every known project.
    pub fn projects(&self) -> BTreeMap<String, Project> {
        self.tables.lock().unwrap().projects.clone()
    }
}

/// Project events kept.
const MAX_PROJECT_EVENTS: usize = 10_000;

fn push_event(
    t: &mut Tables,
    now: f64,
    event: &str,
    project: &str,
    actor: &str,
    session: Option<&str>,
) {
    if t.project_events.len() >= MAX_PROJECT_EVENTS {
        t.project_events.remove(0);
    }
    t.project_events.push(ProjectEvent {
        time: now,
        event: event.to_string(),
        project_id: project.to_string(),
        actor: actor.to_string(),
        session_id: session.map(str::to_string),
    });
}

/// `access_scope` of the list endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// What the caller owns (the default).
    Owned,
    /// Also what is in a project the caller can access.
    Accessible,
}

impl Scope {
    /// Parses the query value (absent: `owned`).
    pub fn parse(value: Option<&str>) -> Result<Scope, String> {
        match value {
            None | Some("owned") => Ok(Scope::Owned),
            Some("accessible") => Ok(Scope::Accessible),
            Some(other) => Err(format!(
                "access_scope must be \"owned\" or \"accessible\", got {:?}",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}
