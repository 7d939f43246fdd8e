//! The policy table: which retention policy governs a key, and changes of it.

use serde_json::{Value as Json, json};

use super::blocking;
use crate::db::{Db, Durable};
use crate::error::{Error, Result};
use crate::plugins::Plugin;
use crate::retention::{Policy, PolicySpec, best_match, glob_matches};
use crate::store::{Write, WriteBatch};
use crate::value::now;

impl Db {
    /// The policy that governs `name`, a key of the type `plugin` serves: its own, else the
    /// most specific matching pattern, else the type's default (the plugin's
    /// `default-retention`), else the configured default.
    pub fn policy_for(&self, name: &str, plugin: &Plugin) -> Policy {
        let policies = self.policies.read().map(|p| p.clone()).unwrap_or_default();
        self.governing(&policies, name, plugin)
    }

    /// [`Db::policy_for`] with the table `policies`.
    fn governing(
        &self,
        policies: &[(String, (PolicySpec, Policy))],
        name: &str,
        plugin: &Plugin,
    ) -> Policy {
        best_match(policies, name)
            .or(plugin.default_retention.as_ref())
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.default_policy().1)
    }

    /// Sets (or with `None` removes) the policy of a key name or `*` pattern. It applies to
    /// existing data at the next compaction run.
    pub async fn set_policy(&self, pattern: &str, spec: Option<PolicySpec>) -> Result<Durable> {
        if pattern.is_empty() || pattern.len() > crate::store::MAX_KEY_LEN {
            return Err(Error::query("a policy's key pattern is 1 to 1024 bytes"));
        }
        let policy = spec.as_ref().map(PolicySpec::policy).transpose()?;
        let mut after = self.policies.read().map(|p| p.clone()).unwrap_or_default();
        after.retain(|(p, _)| p != pattern);
        if let (Some(spec), Some(policy)) = (&spec, &policy) {
            after.push((pattern.to_string(), (spec.clone(), policy.clone())));
        }
        self.check_fits(pattern, &after).await?;
        let mut policies = self
            .policies
            .write()
            .map_err(|_| Error::Storage("policy table lock poisoned".into()))?;
        policies.retain(|(p, _)| p != pattern);
        if let (Some(spec), Some(policy)) = (&spec, policy) {
            policies.push((pattern.to_string(), (spec.clone(), policy)));
        }
        let done = self.writer.submit(WriteBatch {
            writes: vec![Write::Policy {
                pattern: pattern.to_string(),
                spec,
            }],
            after: None,
        });
        Ok(Durable(Some(done)))
    }

    /// Refuses a change of policies (`after` is the table with it) that would leave a key
    /// that `pattern` matches with compacted history its new tiers cannot hold: the change
    /// would otherwise stop that key's compaction (see [`plan_restructure`]).
    async fn check_fits(
        &self,
        pattern: &str,
        after: &[(String, (PolicySpec, Policy))],
    ) -> Result<()> {
        let names = self.keys.names(|name| glob_matches(pattern, name));
        for name in names {
            let Some(slot) = self.slot(&name) else {
                continue;
            };
            let plugin = {
                let state = slot.lock().await;
                if state.def.is_none() {
                    continue;
                }
                self.plugin_of(&state)?
            };
            let policy = self.governing(after, &name, &plugin);
            let (store, key) = (self.store.clone(), name.clone());
            let Some(state) = blocking(move || store.view().compaction_state(&key)).await? else {
                continue;
            };
            if let Err(why) = self.plan_restructure(&name, &state, &policy, now()).await? {
                return Err(Error::query(format!(
                    "the policy does not fit key {name:?}: {why}"
                )));
            }
        }
        Ok(())
    }

    /// `{"default": spec, "types": {type: spec}, "policies": {pattern: spec}}`: `types`
    /// holds the loaded types that chose a default of their own.
    pub fn policies_json(&self) -> Json {
        let policies = self.policies.read().map(|p| p.clone()).unwrap_or_default();
        let types: serde_json::Map<_, _> = self
            .registry
            .all()
            .iter()
            .filter_map(|p| {
                Some((
                    p.info.name.clone(),
                    p.default_retention.as_ref()?.0.to_json(),
                ))
            })
            .collect();
        json!({
            "default": self.default_policy().0.to_json(),
            "types": types,
            "policies": policies.iter().map(|(p, (spec, _))| (p.clone(), spec.to_json()))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}
