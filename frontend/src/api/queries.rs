//! The GraphQL operations of the app, in one place so they can be read against the schema.

/// Everything the canvas draws.
pub const GRAPH: &str = "query Graph {
  me { uuid login role }
  repoUnits(limit: 100) { uuid creatorUuid name visibility cloneUrl isPrivateRepository defaultBranch
    syncPeriodSeconds autoSync lastSyncedAt lastSyncError }
  units(limit: 100) { items { uuid name visibility creatorUuid repoUnitUuid followsDefaultBranch branch commit tag
    targetCommit reportedCommit online updateStatus
    nodes { uuid unitUuid kind topicName visibility lastValue lastValueAt links { uuid outputUuid inputUuid } } } }
}";

pub const LOGIN: &str = "mutation Login($login: String!, $password: String!) {
  login(login: $login, password: $password) { accessToken refreshToken }
}";

pub const REGISTER: &str =
    "mutation Register($input: RegisterInput!) { register(input: $input) { uuid } }";

pub const CREATE_REPO_UNIT: &str = "mutation CreateRepoUnit($input: CreateRepoUnitInput!) { createRepoUnit(input: $input) { uuid } }";

pub const UPDATE_REPO_UNIT: &str =
    "mutation UpdateRepoUnit($uuid: ID!, $input: UpdateRepoUnitInput!) {
  updateRepoUnit(uuid: $uuid, input: $input) { uuid }
}";

pub const DELETE_REPO_UNIT: &str =
    "mutation DeleteRepoUnit($uuid: ID!) { deleteRepoUnit(uuid: $uuid) }";

pub const SYNC_REPO_UNIT: &str = "mutation SyncRepoUnit($uuid: ID!) { syncRepoUnit(uuid: $uuid) { lastSyncedAt lastSyncError } }";

/// Branches, tags and the webhook of a repo_unit, for its forms.
pub const REPO_UNIT_REFS: &str = "query RepoUnitRefs($uuid: ID!) {
  repoUnit(uuid: $uuid) { webhookPath branches { name commit } tags { name commit } }
}";

/// Commits of a branch, for the version picker.
pub const COMMITS: &str = "query Commits($uuid: ID!, $revision: String) {
  repoUnit(uuid: $uuid) { commits(revision: $revision, limit: 30) { id summary time }
    checkCommit(revision: $revision) { usable problems } }
}";

/// Rollouts of a repo_unit, newest first, for its panel.
pub const ROLLOUTS: &str = "query Rollouts($uuid: ID!) {
  rollouts(repoUnitUuid: $uuid) { uuid status wave targetCommit detail createdAt }
}";

pub const START_ROLLOUT: &str =
    "mutation StartRollout($input: StartRolloutInput!) { startRollout(input: $input) { uuid } }";

pub const CHANGE_PASSWORD: &str = "mutation ChangePassword($old: String!, $new: String!) {
  changePassword(oldPassword: $old, newPassword: $new) { accessToken refreshToken }
}";

/// The caller's alert rules (all of them: each panel shows those on its node, unit or repo_unit).
pub const ALERT_RULES: &str = "query AlertRules {
  alertRules { uuid kind unitUuid nodeUuid repoUnitUuid threshold hysteresis minDurationSeconds cooldownSeconds
    timeoutSeconds mutedUntil state lastFiredAt }
}";

pub const CREATE_ALERT_RULE: &str = "mutation CreateAlertRule($input: CreateAlertRuleInput!) {
  createAlertRule(input: $input) { uuid }
}";

pub const DELETE_ALERT_RULE: &str =
    "mutation DeleteAlertRule($uuid: ID!) { deleteAlertRule(uuid: $uuid) }";

/// Mutes a rule for `minutes`; 0 unmutes it.
pub const MUTE_ALERT_RULE: &str = "mutation MuteAlertRule($uuid: ID!, $minutes: Int!) {
  muteAlertRule(uuid: $uuid, minutes: $minutes) { uuid mutedUntil }
}";

/// Where the caller's alerts go.
pub const ALERT_CHANNELS: &str = "query AlertChannels {
  alertChannels { uuid kind telegramChatId webhookUrl paused pausedReason failures createdAt }
}";

pub const CREATE_TELEGRAM_LINK_CODE: &str =
    "mutation LinkCode { createTelegramLinkCode { code expiresAt deepLink } }";

/// A new webhook; its secret is in this answer only.
pub const CREATE_WEBHOOK: &str = "mutation CreateWebhook($url: String!) {
  createWebhookChannel(url: $url) { secret channel { uuid } }
}";

pub const DELETE_ALERT_CHANNEL: &str =
    "mutation DeleteAlertChannel($uuid: ID!) { deleteAlertChannel(uuid: $uuid) }";

pub const RESUME_ALERT_CHANNEL: &str =
    "mutation ResumeAlertChannel($uuid: ID!) { resumeAlertChannel(uuid: $uuid) { uuid paused } }";

/// The caller's recent alerts, newest first.
pub const ALERTS: &str = "query Alerts {
  alerts(limit: 50) { uuid kind ruleKind unitName variable value message muted createdAt }
}";

pub const BOARDS: &str = "query Boards {
  boards { uuid name items { nodeUuid label isInput value lastValue } }
}";

pub const CREATE_BOARD: &str =
    "mutation CreateBoard($input: CreateBoardInput!) { createBoard(input: $input) { uuid } }";

pub const DELETE_BOARD: &str = "mutation DeleteBoard($uuid: ID!) { deleteBoard(uuid: $uuid) }";

/// What the admin panel shows (admins only).
pub const ADMIN: &str = "query Admin {
  users(limit: 100) { uuid login email role status }
  instanceSettings { registrationOpen manualVerification federationEnabled }
  mqttBroker { host port defaultPortTaken }
}";

/// Where units reach the broker (public): the banner when the default port was taken.
pub const MQTT_BROKER: &str = "query MqttBroker { mqttBroker { host port defaultPortTaken } }";

pub const SET_USER_STATUS: &str = "mutation SetUserStatus($uuid: ID!, $status: UserStatus!) {
  setUserStatus(uuid: $uuid, status: $status) { uuid }
}";

pub const SET_USER_ROLE: &str = "mutation SetUserRole($uuid: ID!, $role: UserRole!) {
  setUserRole(uuid: $uuid, role: $role) { uuid }
}";

pub const DELETE_USER: &str = "mutation DeleteUser($uuid: ID!) { deleteUser(uuid: $uuid) }";

/// What deleting a user removes and keeps, shown before the admin confirms.
pub const USER_DELETION_PLAN: &str = "query UserDeletionPlan($uuid: ID!) {
  userDeletionPlan(uuid: $uuid) {
    unitCount repoUnitCount linkCount affectedUnitCount keptRepoUnits { name unitsOfOthers }
  }
}";

pub const UPDATE_INSTANCE_SETTINGS: &str =
    "mutation UpdateSettings($input: InstanceSettingsInput!) {
  updateInstanceSettings(input: $input) { registrationOpen }
}";

pub const CREATE_UNIT: &str =
    "mutation CreateUnit($input: CreateUnitInput!) { createUnit(input: $input) { uuid } }";

pub const UPDATE_UNIT: &str = "mutation UpdateUnit($uuid: ID!, $input: UpdateUnitInput!) { updateUnit(uuid: $uuid, input: $input) { uuid } }";

pub const DELETE_UNIT: &str = "mutation DeleteUnit($uuid: ID!) { deleteUnit(uuid: $uuid) }";

/// What the unit panel shows; creator-only fields come back null (with an error) for others.
pub const UNIT_DETAILS: &str = "query UnitDetails($uuid: ID!) {
  unit(uuid: $uuid) { uuid name online updateStatus updateStatusAt targetCommit reportedCommit state stateAt
    updateAttempts(limit: 10) { targetCommit status detail startedAt }
    logs(limit: 50) { total items { level text createdAt } } grafanaDashboard }
}";

pub const UNIT_ENV: &str = "query UnitEnv($uuid: ID!) { unit(uuid: $uuid) { env } }";

pub const SET_UNIT_ENV: &str =
    "mutation SetUnitEnv($uuid: ID!, $env: JSON!) { setUnitEnv(uuid: $uuid, env: $env) }";

pub const BUNDLE_URL: &str = "query Bundle($uuid: ID!, $format: BundleFormat!) { unit(uuid: $uuid) { bundleUrl(format: $format) } }";

pub const REQUEST_LOG_SYNC: &str = "mutation LogSync($uuid: ID!) { requestLogSync(uuid: $uuid) }";

pub const RESET_UNIT: &str = "mutation Reset($uuid: ID!) { resetUnit(uuid: $uuid) }";

pub const NODE_SETTINGS: &str = "query NodeSettings($uuid: ID!) {
  unitNode(uuid: $uuid) { isRewritableInput historyKind historyLimit historyWindowSeconds }
}";

pub const NODE_SERIES: &str = "query NodeSeries($uuid: ID!, $from: DateTime!, $to: DateTime!, $maxPoints: Int!) {
  series(nodeUuid: $uuid, from: $from, to: $to, maxPoints: $maxPoints) { stepSeconds points { time value } }
}";

pub const NODE_PROCESSING: &str = "query NodeProcessing($uuid: ID!) {
  unitNode(uuid: $uuid) {
    processing { valueType min max deduplicate maxRate { samples perSeconds }
      windows { seconds keepCount keepSeconds } }
    rejections { reason count } }
}";

pub const UPDATE_NODE: &str = "mutation UpdateNode($uuid: ID!, $input: UpdateUnitNodeInput!) {
  updateUnitNode(uuid: $uuid, input: $input) { uuid }
}";

pub const REGENERATE_TOKEN: &str =
    "mutation Regenerate($uuid: ID!) { regenerateUnitToken(uuid: $uuid) }";

pub const SET_INPUT_VALUE: &str = "mutation SetInput($uuid: ID!, $value: String!) { setInputValue(uuid: $uuid, value: $value) { uuid lastValue } }";

pub const CREATE_LINK: &str = "mutation CreateLink($output: ID!, $input: ID!) { createLink(outputUuid: $output, inputUuid: $input) { uuid } }";

pub const DELETE_LINK: &str = "mutation DeleteLink($uuid: ID!) { deleteLink(uuid: $uuid) }";

/// Live data of a set of units, one subscription each over one socket.
pub const LIVE: [(&str, &str); 3] = [
    (
        "values",
        "subscription($u: [ID!]!) { unitNodeValues(unitUuids: $u) { unitUuid nodeUuid value at } }",
    ),
    (
        "presence",
        "subscription($u: [ID!]!) { unitPresence(unitUuids: $u) { unitUuid online } }",
    ),
    (
        "states",
        "subscription($u: [ID!]!) { unitStates(unitUuids: $u) { unitUuid } }",
    ),
];

/// What the federation panel shows (admins only).
pub const FEDERATION: &str = "query Federation {
  instanceSettings { federationEnabled }
  federationActorUrl
  federationPeers { domain actorUrl status requestedHere updatedAt }
  federationFollowers { unitUuid peerDomain }
}";

pub const REQUEST_PEERING: &str = "mutation RequestPeering($address: String!) { requestPeering(address: $address) { domain status } }";

pub const ACCEPT_PEERING: &str =
    "mutation AcceptPeering($domain: String!) { acceptPeering(domain: $domain) { status } }";

pub const REJECT_PEERING: &str =
    "mutation RejectPeering($domain: String!) { rejectPeering(domain: $domain) }";

pub const END_PEERING: &str =
    "mutation EndPeering($domain: String!) { endPeering(domain: $domain) }";

pub const BLOCK_INSTANCE: &str = "mutation BlockInstance($address: String!) { blockInstance(address: $address) { domain status } }";

pub const UNBLOCK_INSTANCE: &str =
    "mutation UnblockInstance($domain: String!) { unblockInstance(domain: $domain) }";

/// The remote units this instance follows: the mirror nodes of the canvas.
pub const REMOTE_UNITS: &str = "query RemoteUnits {
  remoteUnits { uuid address peerDomain name status
    outputs { uuid name lastValue lastValueAt } links { uuid outputName inputUuid } }
}";

/// A remote unit's outputs, read from its home instance without following it.
pub const PREVIEW_REMOTE_UNIT: &str = "query PreviewRemoteUnit($address: String!) {
  previewRemoteUnit(address: $address) { address peerDomain name outputs { remoteUuid name lastValue lastValueAt } }
}";

pub const LINK_REMOTE_OUTPUT: &str =
    "mutation LinkRemoteOutput($unit: String!, $output: String!, $input: ID!) {
  linkRemoteOutput(unit: $unit, output: $output, inputUuid: $input) { uuid }
}";

pub const UNLINK_REMOTE_OUTPUT: &str =
    "mutation UnlinkRemoteOutput($uuid: ID!) { unlinkRemoteOutput(uuid: $uuid) }";

pub const UNFOLLOW_REMOTE_UNIT: &str =
    "mutation UnfollowRemoteUnit($uuid: ID!) { unfollowRemoteUnit(uuid: $uuid) }";

/// The instances blocked from one unit (its creator or an admin).
pub const UNIT_BLOCKS: &str =
    "query UnitBlocks($unit: ID!) { unitBlockedInstances(unitUuid: $unit) { domain createdAt } }";

pub const BLOCK_FOR_UNIT: &str = "mutation BlockForUnit($unit: ID!, $address: String!) {
  blockInstanceForUnit(unitUuid: $unit, address: $address) { domain }
}";

pub const UNBLOCK_FOR_UNIT: &str = "mutation UnblockForUnit($unit: ID!, $domain: String!) {
  unblockInstanceForUnit(unitUuid: $unit, domain: $domain)
}";
