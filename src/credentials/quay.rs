//! Quay robot tokens through robot federation: regcred's own ServiceAccount token is presented as the robot's
//! password at `GET /oauth2/federation/robot/token`; Quay checks it against the robot's federation (issuer and
//! subject) and answers with a short-lived robot token, used with the robot's name.

use jiff::{SignedDuration, Timestamp};

use super::egress;
use super::identity::Identity;
use super::oauth::{self, Step};
use super::render;
use super::tokens::{MintError, Minted, QuaySource};

const FEDERATION: Step =
    Step { name: "Quay's robot federation", refused: "FederationRefused", unreachable: "FederationUnreachable" };

pub async fn mint(source: &QuaySource, identity: &Identity) -> Result<Minted, MintError> {
    let host = crate::registry::host_of(&source.registry);
    let url = format!("https://{host}/oauth2/federation/robot/token");
    // Checked before regcred asks for its token: the audience is the registry host, the host is allowed.
    egress::quay_audience(&source.audience, &source.registry)?;
    identity.endpoints.check_str(&url, "Quay's robot federation (spec.server)")?;
    let subject = identity.service_account_token(&source.audience).await?;
    let subject = String::from_utf8_lossy(subject.expose()).into_owned();
    let http = oauth::registry_client(&url, &source.tls, &identity.endpoints)?;
    let answer = http.send(FEDERATION, http.get(&url).basic_auth(&source.robot, Some(subject))).await?;
    let token = oauth::field(FEDERATION, &answer, "token")?;
    // Quay's robot tokens are JWTs valid for an hour; one without `exp` is taken at that.
    let expires_at = oauth::expiry(token).unwrap_or_else(|| Timestamp::now() + SignedDuration::from_hours(1));
    Ok(Minted { config: render(&source.registry_key, &source.robot, token), expires_at })
}
