//! SeaORM entities of calltrail's tables. Plain models, as a generator would
//! write them; the lifecycle rules that fill them live in `calltrail::domain`.

pub mod action;
pub mod analysis;
pub mod attempt;
pub mod call;
pub mod webhook_event;

pub mod prelude {
    pub use super::action::Entity as Action;
    pub use super::analysis::Entity as Analysis;
    pub use super::attempt::Entity as Attempt;
    pub use super::call::Entity as Call;
    pub use super::webhook_event::Entity as WebhookEvent;
}
