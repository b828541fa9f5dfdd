//! A scripted `PamHandler`: built with the calls the logic must make, in order, each with its
//! answer. A call out of order, or after the last step, panics with the step expected; a
//! handler dropped with steps left panics too (unless the test is already failing), so a test
//! shows both that nothing unexpected happened and that everything expected did.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt;

use forcelogout_core::login::{LogLevel, PamHandler, PamItem};
use forcelogout_core::Error;

/// What a text passed to the handle must be.
pub struct Text {
    describe: String,
    test: Box<dyn Fn(&str) -> bool>,
}

impl Text {
    pub fn exact(expected: impl Into<String>) -> Text {
        let expected = expected.into();
        Text {
            describe: format!("exactly {expected:?}"),
            test: Box::new(move |text| text == expected),
        }
    }

    /// Contains every one of `parts`.
    pub fn containing(parts: &[&str]) -> Text {
        let parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        Text {
            describe: format!("containing {parts:?}"),
            test: Box::new(move |text| parts.iter().all(|p| text.contains(p.as_str()))),
        }
    }

    pub fn any() -> Text {
        Text {
            describe: "anything".into(),
            test: Box::new(|_| true),
        }
    }

    fn accepts(&self, text: &str) -> bool {
        (self.test)(text)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe)
    }
}

/// One call the logic must make, and what the handle answers.
#[derive(Debug)]
pub enum Expect {
    /// `user()`, answered with the name or the error.
    User(Result<String, Error>),
    /// `item(item)`, answered with the value.
    Item(PamItem, Option<String>),
    /// `env(name)`, answered with the value.
    Env(&'static str, Option<String>),
    /// `data(name)`, answered with the value.
    Data(&'static str, Option<String>),
    /// `set_data(name, value)` with a value the matcher accepts; succeeds.
    SetData(&'static str, Text),
    /// `set_data(name, value)` with a value the matcher accepts; fails with the error.
    SetDataFails(&'static str, Text, Error),
    /// `info(text)`.
    Info(Text),
    /// `error(text)`.
    Error(Text),
    /// `log(level, text)`.
    Log(LogLevel, Text),
}

pub struct ScriptedHandler {
    steps: RefCell<VecDeque<Expect>>,
    /// How many steps were used, to name the failing one.
    used: RefCell<usize>,
    /// The values given to `set_data`, latest last.
    stored: RefCell<HashMap<String, String>>,
}

impl ScriptedHandler {
    pub fn new(steps: Vec<Expect>) -> ScriptedHandler {
        ScriptedHandler {
            steps: RefCell::new(steps.into()),
            used: RefCell::new(0),
            stored: RefCell::new(HashMap::new()),
        }
    }

    /// More steps after the ones left: the same handle used for the next hook, as libpam
    /// keeps one handle from `account` to `close_session`.
    pub fn then(&mut self, steps: Vec<Expect>) {
        self.steps.get_mut().extend(steps);
    }

    /// The last value `set_data` stored under `name`.
    pub fn stored(&self, name: &str) -> Option<String> {
        self.stored.borrow().get(name).cloned()
    }

    /// The answer of the next step, which `answer` gives when the step is this call; a
    /// panic naming both otherwise.
    fn next<T>(&self, call: String, answer: impl FnOnce(Expect) -> Option<T>) -> T {
        let step = self.steps.borrow_mut().pop_front();
        let index = {
            let mut used = self.used.borrow_mut();
            *used += 1;
            *used
        };
        let Some(step) = step else {
            panic!("unexpected PAM call {call} after the last step of the script");
        };
        let expected = format!("{step:?}");
        answer(step).unwrap_or_else(|| {
            panic!("PAM call out of script: got {call}, expected step {index}: {expected}")
        })
    }
}

impl Drop for ScriptedHandler {
    fn drop(&mut self) {
        let left = self.steps.get_mut();
        if !left.is_empty() && !std::thread::panicking() {
            panic!("the script has {} steps never used: {left:?}", left.len());
        }
    }
}

impl PamHandler for ScriptedHandler {
    fn user(&self) -> Result<String, Error> {
        self.next("user()".into(), |step| match step {
            Expect::User(answer) => Some(answer),
            _ => None,
        })
    }

    fn item(&self, item: PamItem) -> Option<String> {
        self.next(format!("item({item:?})"), |step| match step {
            Expect::Item(expected, answer) if expected == item => Some(answer),
            _ => None,
        })
    }

    fn env(&self, name: &str) -> Option<String> {
        self.next(format!("env({name:?})"), |step| match step {
            Expect::Env(expected, answer) if expected == name => Some(answer),
            _ => None,
        })
    }

    fn data(&self, name: &str) -> Option<String> {
        self.next(format!("data({name:?})"), |step| match step {
            Expect::Data(expected, answer) if expected == name => Some(answer),
            _ => None,
        })
    }

    fn set_data(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let outcome = self.next(
            format!("set_data({name:?}, {value:?})"),
            |step| match step {
                Expect::SetData(expected, text) if expected == name && text.accepts(value) => {
                    Some(Ok(()))
                }
                Expect::SetDataFails(expected, text, error)
                    if expected == name && text.accepts(value) =>
                {
                    Some(Err(error))
                }
                _ => None,
            },
        );
        if outcome.is_ok() {
            self.stored.borrow_mut().insert(name.into(), value.into());
        }
        outcome
    }

    fn info(&mut self, text: &str) {
        self.next(format!("info({text:?})"), |step| match step {
            Expect::Info(expected) if expected.accepts(text) => Some(()),
            _ => None,
        })
    }

    fn error(&mut self, text: &str) {
        self.next(format!("error({text:?})"), |step| match step {
            Expect::Error(expected) if expected.accepts(text) => Some(()),
            _ => None,
        })
    }

    fn log(&self, level: LogLevel, text: &str) {
        self.next(format!("log({level:?}, {text:?})"), |step| match step {
            Expect::Log(expected, matcher) if expected == level && matcher.accepts(text) => {
                Some(())
            }
            _ => None,
        })
    }
}
