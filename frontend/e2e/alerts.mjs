// The browser test of the alert panels, against a real server (backend/tests/browser.rs starts it with
// a Telegram Bot API stub and a webhook receiver, and makes alice's unit "Greenhouse").
// Headless Chromium from the distribution, driven by playwright-core; a real MQTT client plays the unit.
//
// It prints `telegram command: /start <code>` (the test sends it to the bot as a Telegram user) and
// `webhook secret: <secret>` (the test checks the webhook's signatures with it).
//
// Environment: PEPEUNIT_URL (the server), PEPEUNIT_LOGIN (login:password), PEPEUNIT_MQTT_URL (its broker),
// PEPEUNIT_UNIT, PEPEUNIT_UNIT_TOKEN (the unit and its token), PEPEUNIT_OUTPUT, PEPEUNIT_OUTPUT_TOPIC (its
// output `current_temp` and that output's topic), PEPEUNIT_INPUT (its input), PEPEUNIT_WEBHOOK_URL (the
// receiver), PEPEUNIT_E2E_OUT (where screenshots go), CHROMIUM (browser binary).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import mqtt from "mqtt";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
};
const base = env("PEPEUNIT_URL");
const [login, password] = env("PEPEUNIT_LOGIN").split(":");
const mqttUrl = env("PEPEUNIT_MQTT_URL");
const unitUuid = env("PEPEUNIT_UNIT");
const unitToken = env("PEPEUNIT_UNIT_TOKEN");
const output = env("PEPEUNIT_OUTPUT");
const outputTopic = env("PEPEUNIT_OUTPUT_TOPIC");
const input = env("PEPEUNIT_INPUT");
const webhookUrl = env("PEPEUNIT_WEBHOOK_URL");
const out = env("PEPEUNIT_E2E_OUT");
mkdirSync(out, { recursive: true });

const step = (what) => console.log(`step: ${what}`);
const problems = [];
let page;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(20000);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  // Nothing may load from anywhere but the server.
  page.on("request", (r) => { if (!r.url().startsWith(base)) problems.push(`request off the server: ${r.url()}`); });
  const dialog = () => page.getByRole("dialog");
  const closeDialog = async () => {
    await page.keyboard.press("Escape");
    await dialog().waitFor({ state: "detached" });
  };

  step("log in");
  await page.goto(base);
  await page.getByRole("dialog", { name: "Log in" }).waitFor();
  await page.fill("#field-login", login);
  await page.fill("#field-password", password);
  await page.press("#field-password", "Enter");
  await dialog().waitFor({ state: "detached" });

  step("the output's panel: a threshold rule without a threshold is refused beside that field");
  await page.locator(`g.node[data-uuid="${output}"]`).click();
  await page.getByRole("dialog", { name: "Output current_temp of Greenhouse" }).waitFor();
  await page.selectOption("#field-kind", "ABOVE");
  await page.click("#alert-rule-form button[type=submit]");
  const thresholdError = page.locator("#field-threshold-error");
  await thresholdError.waitFor();
  console.log(`field error: ${await thresholdError.textContent()}`);

  step("add ABOVE 30 with a hysteresis of 2; it is listed in words");
  await page.fill("#field-threshold", "30");
  await page.fill("#field-hysteresis", "2");
  await page.click("#alert-rule-form button[type=submit]");
  const rule = page.locator('#alert-rules li.rule[data-kind="above"]');
  await rule.filter({ hasText: "above 30 (back to normal at 28 or below)" }).waitFor();
  await page.getByRole("status").filter({ hasText: "Alert rule added" }).waitFor();
  await thresholdError.waitFor({ state: "detached" });

  step("mute it for 15 minutes, then unmute it");
  await rule.locator("select").selectOption("15");
  await rule.getByRole("button", { name: "Mute" }).click();
  await rule.locator(".muted-until").waitFor();
  console.log(`rule: ${await rule.textContent()}`);
  await page.screenshot({ path: join(out, "alert-rules.png") });
  await rule.getByRole("button", { name: "Unmute" }).click();
  await rule.locator(".muted-until").waitFor({ state: "detached" });
  await closeDialog();

  step("the unit's panel: an OFFLINE rule after 10 minutes");
  await page.locator(`g.node[data-uuid="${unitUuid}"]`).click();
  await page.getByRole("dialog", { name: "Unit Greenhouse" }).waitFor();
  await page.selectOption("#field-kind", "OFFLINE");
  await page.fill("#field-timeoutSeconds", "600");
  await page.click("#alert-rule-form button[type=submit]");
  await page.locator('#alert-rules li.rule[data-kind="offline"]', { hasText: "offline for 10 min" }).waitFor();
  await closeDialog();

  step("Alerts → Channels: link a Telegram chat with the code and deep link the app shows");
  await page.click("#alerts");
  await page.getByRole("dialog", { name: "Alerts" }).waitFor();
  await page.click("#telegram-link-code");
  await page.locator("#telegram-command").waitFor();
  // The deep link needs the bot's name, which the server learns from Telegram when it starts; each new
  // code replaces the last, so the next is asked for only once the previous one shows.
  const deadline = Date.now() + 60000;
  while (!(await page.locator("#telegram-deep-link").isVisible())) {
    if (Date.now() > deadline) throw new Error("no t.me deep link: the server never learned the bot's name");
    await page.waitForTimeout(500);
    const shown = await page.locator("#telegram-command").textContent();
    await page.click("#telegram-link-code");
    await page.waitForFunction((before) => document.querySelector("#telegram-command")?.textContent !== before, shown);
  }
  const command = (await page.locator("#telegram-command").textContent()).trim();
  const code = command.replace(/^\/start /, "");
  const deepLink = await page.locator("#telegram-deep-link").getAttribute("href");
  if (!/^\/start [0-9a-f]{32}$/.test(command) || deepLink !== `https://t.me/pepeunit_test_bot?start=${code}`) {
    throw new Error(`unexpected link instructions: ${command} ${deepLink}`);
  }
  console.log(`telegram command: ${command}`);
  await page.locator('#telegram-chats li.channel[data-kind="telegram"]', { hasText: "Telegram chat 7001" }).waitFor({ timeout: 60000 });
  // The code did its job: it goes away.
  await page.locator("#telegram-link").waitFor({ state: "detached" });
  await page.getByRole("status").filter({ hasText: "Telegram chat linked" }).waitFor();

  step("a webhook: a bad URL is refused beside the field, a good one shows its secret once");
  await page.fill("#field-url", "ftp://example.org/hook");
  await page.press("#field-url", "Enter");
  const urlError = page.locator("#field-url-error");
  await urlError.waitFor();
  console.log(`field error: ${await urlError.textContent()}`);
  await page.fill("#field-url", webhookUrl);
  await page.press("#field-url", "Enter");
  const secret = (await page.locator("#webhook-secret-value").textContent()).trim();
  if (secret.length < 32) throw new Error(`a short webhook secret: ${secret}`);
  console.log(`webhook secret: ${secret}`);
  await page.locator('#webhooks li.channel[data-kind="webhook"]', { hasText: webhookUrl }).waitFor();
  await page.screenshot({ path: join(out, "alert-channels.png") });
  await page.getByRole("button", { name: "I have copied it" }).click();
  await page.locator("#webhook-secret").waitFor({ state: "detached" });
  if ((await page.content()).includes(secret)) throw new Error("the secret is still on the page");

  step("Boards: compose one of the fan's button (value 1), a button that asks, and the temperature");
  await page.click("#tab-boards");
  await page.fill("#field-name", "Greenhouse");
  await page.selectOption("#field-nodeUuid", input);
  await page.fill("#field-label", "Fan on");
  await page.fill("#field-value", "1");
  await page.click("#add-board-item");
  await page.selectOption("#field-nodeUuid", input);
  await page.fill("#field-label", "Fan");
  await page.click("#add-board-item");
  await page.selectOption("#field-nodeUuid", output);
  await page.click("#add-board-item");
  await page.locator("#board-items li").nth(2).waitFor();
  await page.click("#board-form button[type=submit]");
  const board = page.locator('#boards li.board[data-name="Greenhouse"]');
  await board.waitFor();
  const boardText = await board.textContent();
  console.log(`board: ${boardText}`);
  for (const part of ["[Fan on = 1]", "[Fan = ?]", "current_temp"]) {
    if (!boardText.includes(part)) throw new Error(`the board does not show ${part}: ${boardText}`);
  }
  step("another board, deleted again");
  await page.fill("#field-name", "Spare");
  await page.selectOption("#field-nodeUuid", output);
  await page.click("#add-board-item");
  await page.click("#board-form button[type=submit]");
  const spare = page.locator('#boards li.board[data-name="Spare"]');
  await spare.waitFor();
  await spare.getByRole("button", { name: "Delete" }).click();
  await spare.getByRole("button", { name: "Really delete?" }).click();
  await spare.waitFor({ state: "detached" });
  await page.screenshot({ path: join(out, "boards.png") });

  step("the unit publishes 20, 31.5 and 27.5 over MQTT; the history shows the alert and its return");
  const client = await mqtt.connectAsync(mqttUrl, {
    clientId: unitUuid, username: unitToken, password: "", reconnectPeriod: 0,
  });
  for (const value of ["20", "31.5", "27.5"]) await client.publishAsync(outputTopic, value, { qos: 1 });
  await client.endAsync();
  await page.click("#tab-history");
  const row = (kind, value) => page.locator(`#alert-history tr.alert[data-kind="${kind}"]`)
    .filter({ hasText: "Greenhouse" }).filter({ hasText: "current_temp" }).filter({ hasText: value });
  await row("fired", "31.5").waitFor({ timeout: 60000 });
  await row("resolved", "27.5").waitFor({ timeout: 60000 });
  const fired = await row("fired", "31.5").textContent();
  console.log(`history: ${fired}`);
  if (!/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/.test(fired) || !fired.includes("fired (above)")) {
    throw new Error(`the history row lacks its time or kind: ${fired}`);
  }
  await page.screenshot({ path: join(out, "alert-history.png") });

  if (problems.length) throw new Error(`the page reported errors:\n${problems.join("\n")}`);
  console.log(`ok: screenshots in ${out}`);
} catch (error) {
  if (page) await page.screenshot({ path: join(out, "alerts-failure.png") }).catch(() => {});
  throw error;
} finally {
  await browser.close();
}
