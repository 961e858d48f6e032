//! Property/fuzz checks of the CNI plugin's input (the container runtime's
//! stdin and environment): any input is an answer with a CNI exit code,
//! never a panic, and never a success for an enrolled pod the agent did not
//! agree to.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bolero::check;
use cni::plugin::{PluginEnv, run};

#[test]
fn any_stdin_and_environment_get_a_cni_answer() {
    check!()
        .with_iterations(5_000)
        .with_type::<(String, Option<String>, Option<String>, Option<String>)>()
        .for_each(|(stdin, command, netns, args)| {
            let env =
                PluginEnv { command: command.clone(), netns: netns.clone(), args: args.clone() };
            let outcome = run(&env, stdin, |_, _| Err("the agent is unreachable".into()));
            assert!(outcome.code >= 0);
            if outcome.code != 0 {
                // CNI errors are JSON with a code and a message.
                let error: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
                assert!(error["code"].as_u64().is_some(), "{}", outcome.stdout);
            }
        });
}
