//! The condition types and reasons of a RegistryProfile's status, written once here so every layer that writes or
//! reads them (the resolver deciding whether a profile withholds its Secrets, the controller writing status, the
//! tests) names the same strings. Reasons that come from elsewhere (a credential source's failure, a preflight's)
//! are carried as they come.

/// A condition's `status` when it holds.
pub const TRUE: &str = "True";
/// A condition's `status` when it does not.
pub const FALSE: &str = "False";

/// Condition: the profile is at its desired state (its reason is that of the first condition that is not).
pub const READY: &str = "Ready";
/// Condition: where the profile's credentials come from resolved.
pub const CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
/// Condition: the Secret is current in every selected namespace.
pub const SECRETS_SYNCED: &str = "SecretsSynced";
/// Condition (and reason): present, and `True`, only while the deletion guard holds deletions.
pub const DELETIONS_HELD: &str = "DeletionsHeld";
/// Condition: the registry preflight's verdict on the credentials.
pub const CREDENTIALS_VALID: &str = "CredentialsValid";
/// Condition: the registry preflight's verdict on the probe images.
pub const IMAGES_VERIFIED: &str = "ImagesVerified";

/// `Ready`: everything is in place.
pub const REASON_READY: &str = "Ready";
/// `CredentialsResolved`: resolved from a source.
pub const RESOLVED: &str = "Resolved";
/// `CredentialsResolved`: anonymous access, no Secret.
pub const ANONYMOUS: &str = "Anonymous";
/// `CredentialsResolved`: the first token is on its way.
pub const MINTING: &str = "Minting";
/// `SecretsSynced`: current in every selected namespace.
pub const SYNCED: &str = "Synced";
/// `SecretsSynced`: anonymous access needs no Secret.
pub const NOT_REQUIRED: &str = "NotRequired";
/// `SecretsSynced` (and a namespace's failure): another profile writes a Secret of the same name there, or a
/// Secret regcred does not manage holds the name.
pub const CONFLICT: &str = "Conflict";
/// `SecretsSynced`: some write failed.
pub const WRITE_FAILED: &str = "WriteFailed";
/// `SecretsSynced`: `spec.delivery` is `CredentialProvider`: no Secret is written, the kubelet's credential
/// provider gets the credentials from regcred at pull time.
pub const CREDENTIAL_PROVIDER: &str = "CredentialProvider";
/// A namespace's refusal (a write planned before the profile changed): the profile writes no Secret anywhere.
pub const NOT_WRITTEN: &str = "NotWritten";
/// A namespace's refusal: the profile does not select it.
pub const NOT_SELECTED: &str = "NotSelected";
/// `SecretsSynced`: the credentials do not resolve; existing Secrets are left as they are.
pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
/// `SecretsSynced`: `onFailure: Withhold` and the registry preflight failed.
pub const WITHHELD_BY_PREFLIGHT: &str = "WithheldByPreflight";
/// `SecretsSynced`: `onFailure: Withhold` and the registry preflight has not answered yet.
pub const AWAITING_PREFLIGHT: &str = "AwaitingPreflight";
/// `SecretsSynced`: the namespace selector does not compile.
pub const INVALID_SELECTOR: &str = "InvalidSelector";

/// The `SecretsSynced` reasons of a sync that never got past the gate: nothing was written at that generation.
pub const WITHHELD_REASONS: [&str; 4] =
    [WITHHELD_BY_PREFLIGHT, AWAITING_PREFLIGHT, CREDENTIALS_UNAVAILABLE, INVALID_SELECTOR];

/// `status.checks`: the last preflight passed.
pub const CHECKS_PASSED: &str = "Passed";
/// `status.checks`: the last preflight failed.
pub const CHECKS_FAILED: &str = "Failed";
/// `status.checks`: a preflight of the current settings is running.
pub const CHECKS_CHECKING: &str = "Checking";
