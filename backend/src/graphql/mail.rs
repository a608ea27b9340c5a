//! E-mail links in GraphQL: asking for a password-reset or verification mail, and using its link's token.
//!
//! The links point at the web app's public URL (`/reset?token=…`, `/verify?token=…`); a client reads the
//! token from the link and calls [`MailMutation::reset_password`] or [`MailMutation::verify_email`].

use async_graphql::{Context, Object, Result};

use crate::error::GqlResult;
use crate::graphql::{RequestInfo, services};
use crate::services::mail as service;

#[derive(Default)]
pub struct MailMutation;

#[Object]
impl MailMutation {
    /// Mails a password-reset link to the account with this address. Answers `true` whether or not there
    /// is one; rate-limited per address and per client (`RATE_LIMITED`); `UNAVAILABLE` without SMTP.
    async fn request_password_reset(&self, ctx: &Context<'_>, email: String) -> Result<bool> {
        let client = ctx.data::<RequestInfo>()?.client_ip;
        service::request_reset(services(ctx)?, client, &email)
            .await
            .gql()?;
        Ok(true)
    }

    /// Sets a new password with the token of a reset link. The link works once and expires; every session
    /// of the account ends. A used, expired or unknown token is refused with `VALIDATION` on `token`.
    #[graphql(complexity = "super::EXPENSIVE_MUTATION")]
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password: String,
    ) -> Result<bool> {
        service::reset_password(services(ctx)?, &token, &new_password)
            .await
            .gql()?;
        Ok(true)
    }

    /// Mails a new verification link to an account that awaits verification by e-mail. Answers like
    /// `requestPasswordReset`.
    async fn request_verification_mail(&self, ctx: &Context<'_>, email: String) -> Result<bool> {
        let client = ctx.data::<RequestInfo>()?.client_ip;
        service::request_verification(services(ctx)?, client, &email)
            .await
            .gql()?;
        Ok(true)
    }

    /// Verifies the account with the token of a verification link; it may log in afterwards. The link
    /// works once and expires.
    async fn verify_email(&self, ctx: &Context<'_>, token: String) -> Result<bool> {
        service::verify_email(services(ctx)?, &token).await.gql()?;
        Ok(true)
    }
}
