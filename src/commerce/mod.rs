//! Commerce: what creators sell (products granting playback ids, their prices), tax rates,
//! discount codes and carts, priced by one pure function ([`money::price`]). Money is
//! integer minor units throughout: floating point is refused by the lint below.

#![deny(clippy::float_arithmetic)]

pub mod cart;
pub mod coinbase;
pub mod fulfil;
pub mod invoicing;
pub mod money;
pub mod paypal;
pub mod provider;
pub mod revenue;
pub mod stripe;
