//! cxpulse-gateway: the HTTP front door for producers without a Kafka client and for survey
//! tools' webhooks. `POST /v1/events` takes schema-1 events as they are; `POST
//! /v1/webhooks/{name}` maps a survey tool's delivery (one mapper per kind in [`kinds`]) to
//! schema-1 events. Either way each event goes through the worker's own parser, valid ones are
//! produced to Kafka keyed `brand/segment`, rejected ones are dead-lettered, and the sender hears
//! 2xx only once Kafka acknowledged everything.

pub mod auth;
pub mod config;
pub mod form;
pub mod kafka;
pub mod kinds;
pub mod mapping;
pub mod metrics;
pub mod router;
pub mod serve;
pub mod time;

pub use config::{GatewayConfig, GatewaySettings, Kind, SourceSpec};
pub use router::{router, Gateway};
pub use serve::serve;
