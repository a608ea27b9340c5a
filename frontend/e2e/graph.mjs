// The browser test of the web app, against a real server (backend/tests/browser.rs starts it).
// Headless Chromium from the distribution, driven by playwright-core; a real MQTT client plays the unit.
//
// Environment: PEPEUNIT_URL (the server), PEPEUNIT_REPO_URL (a git remote the server may mirror),
// PEPEUNIT_MQTT_URL (its broker), PEPEUNIT_MQTT_PORT_TAKEN (the default port the test holds, so the broker
// fell back to the one in PEPEUNIT_MQTT_URL), PEPEUNIT_E2E_OUT (where screenshots go), PEPEUNIT_ADMIN
// (login:password of an admin), CHROMIUM (browser binary).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import mqtt from "mqtt";
import { chromium } from "playwright-core";

const base = process.env.PEPEUNIT_URL;
const repoUrl = process.env.PEPEUNIT_REPO_URL;
const mqttUrl = process.env.PEPEUNIT_MQTT_URL;
const out = process.env.PEPEUNIT_E2E_OUT;
const portTaken = process.env.PEPEUNIT_MQTT_PORT_TAKEN;
const [adminLogin, adminPassword] = (process.env.PEPEUNIT_ADMIN || "").split(":");
if (!base || !repoUrl || !mqttUrl || !portTaken || !out || !adminPassword) {
  throw new Error("set PEPEUNIT_URL, PEPEUNIT_REPO_URL, PEPEUNIT_MQTT_URL, PEPEUNIT_MQTT_PORT_TAKEN, PEPEUNIT_E2E_OUT, PEPEUNIT_ADMIN");
}
const brokerPort = new URL(mqttUrl).port;
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
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.setDefaultTimeout(20000);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => console.log(`browser ${m.type()}: ${m.text()}`));

  // Calls the API with the token the app stored, to learn uuids, topics and the unit's token.
  const api = (query, variables = {}) => page.evaluate(async ([query, variables]) => {
    const response = await fetch("/graphql", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${localStorage.getItem("pepeunit.access")}` },
      body: JSON.stringify({ query, variables }),
    });
    const body = await response.json();
    if (body.errors) throw new Error(JSON.stringify(body.errors));
    return body.data;
  }, [query, variables]);

  step("open the app: it asks to log in");
  await page.goto(base);
  await page.getByRole("dialog", { name: "Log in" }).waitFor();

  step("register; the server's refusal of a short password shows beside that field");
  await page.click("#to-register");
  await page.fill("#field-login", "alice");
  await page.fill("#field-email", "alice@example.com");
  await page.fill("#field-password", "short");
  await page.press("#field-password", "Enter");
  const passwordError = page.locator("#field-password-error");
  await passwordError.waitFor();
  console.log(`field error: ${await passwordError.textContent()}`);
  await page.screenshot({ path: join(out, "form-validation.png") });
  await page.fill("#field-password", "correct-horse-battery");
  await page.press("#field-password", "Enter");
  await page.locator("#new-repo-unit").waitFor();
  await page.getByRole("dialog").waitFor({ state: "detached" });

  step("a banner says the default MQTT port was taken and which port the broker uses; it can be dismissed");
  const portNotice = page.getByRole("status").filter({ hasText: `port ${portTaken} was taken by another program` });
  await portNotice.waitFor();
  const noticeText = await portNotice.textContent();
  console.log(`port notice: ${noticeText}`);
  if (!noticeText.includes(`:${brokerPort}:`) || !noticeText.includes("PEPEUNIT_MQTT_BIND")) {
    throw new Error(`the port notice does not name port ${brokerPort} and PEPEUNIT_MQTT_BIND: ${noticeText}`);
  }
  await page.screenshot({ path: join(out, "mqtt-port-notice.png") });
  await portNotice.getByRole("button", { name: "Dismiss the MQTT port notice" }).click();
  await portNotice.waitFor({ state: "detached" });

  step("create a repo_unit from the local git repository");
  await page.click("#new-repo-unit");
  await page.fill("#field-name", "Firmware");
  await page.fill("#field-cloneUrl", repoUrl);
  await page.screenshot({ path: join(out, "form-repo-unit.png") });
  await page.press("#field-cloneUrl", "Enter");
  await page.getByRole("dialog", { name: "Repository Firmware" }).waitFor({ timeout: 60000 });

  step("create two units from it");
  for (const name of ["sensor", "fan"]) {
    if (!(await page.locator("#create-unit").isVisible())) {
      await page.locator('g.node[data-kind="repo-unit"]').first().click();
    }
    await page.click("#create-unit");
    await page.fill("#field-name", name);
    await page.press("#field-name", "Enter");
    await page.getByRole("dialog", { name: `Unit ${name}` }).waitFor();
    await page.keyboard.press("Escape");
    await page.getByRole("dialog").waitFor({ state: "detached" });
  }
  const { units } = await api("{ units { items { uuid name nodes { uuid kind topicName topic } } } }");
  const unit = (name) => units.items.find((u) => u.name === name);
  const node = (name, kind) => unit(name).nodes.find((n) => n.kind === kind);
  const output = node("sensor", "OUTPUT");
  const input = node("fan", "INPUT");
  await page.locator(`g.node[data-uuid="${output.uuid}"]`).waitFor();
  await page.locator(`g.node[data-uuid="${input.uuid}"]`).waitFor();
  // New units were placed below what was there; one click lays everything out in layers again.
  await page.click("#relayout");

  step("link the sensor's output to the fan's input by dragging");
  const port = await page.locator(`circle.port[data-port="${output.uuid}"]`).boundingBox();
  const target = await page.locator(`g.node[data-uuid="${input.uuid}"]`).boundingBox();
  await page.mouse.move(port.x + port.width / 2, port.y + port.height / 2);
  await page.mouse.down();
  await page.mouse.move(target.x + target.width / 2, target.y + target.height / 2, { steps: 12 });
  await page.mouse.up();
  const links = page.locator("path.edge-hit[data-link]");
  await links.first().waitFor();

  step("a value published by a real MQTT client appears on the node");
  const { unit: sensor } = await api("query($u: ID!) { unit(uuid: $u) { env } }", { u: unit("sensor").uuid });
  const client = await mqtt.connectAsync(mqttUrl, {
    clientId: unit("sensor").uuid, username: sensor.env.PU_AUTH_TOKEN, password: "", reconnectPeriod: 0,
  });
  await client.publishAsync(output.topic, "23.5", { qos: 1 });
  await page.locator(`g.node[data-uuid="${output.uuid}"] text.detail`, { hasText: "23.5" }).waitFor();
  await page.locator(`g.node[data-kind="unit"] .presence`).first().waitFor();
  await page.screenshot({ path: join(out, "graph.png") });
  await client.endAsync();

  step("delete the link");
  await links.first().click({ force: true });
  await page.getByRole("dialog", { name: "Link" }).waitFor();
  await page.screenshot({ path: join(out, "form-link.png") });
  await page.click("#delete-link");
  await page.getByRole("dialog").waitFor({ state: "detached" });
  await page.waitForFunction(() => document.querySelectorAll("path.edge-hit[data-link]").length === 0);

  step("the output's chart draws its series from the server; dragging across it zooms in");
  await api("mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 1000 }) { uuid } }",
    { n: output.uuid });
  // Thirty samples over the last fifty minutes, posted over REST with their own times.
  const now = Date.now();
  const samples = Array.from({ length: 30 }, (_, i) => ({
    output: output.topicName, value: 20 + 5 * Math.sin(i / 4), time: new Date(now - (30 - i) * 100000).toISOString(),
  }));
  const posted = await page.evaluate(async ([uuid, token, body]) => {
    const response = await fetch(`/api/v1/units/${uuid}/values`, {
      method: "POST", headers: { "x-auth-token": token, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    return `${response.status} ${await response.text()}`;
  }, [unit("sensor").uuid, sensor.env.PU_AUTH_TOKEN, samples]);
  if (!posted.startsWith("200")) throw new Error(`posting samples: ${posted}`);
  await page.locator(`g.node[data-uuid="${output.uuid}"]`).click();
  const chart = page.locator("#series-chart");
  await chart.locator("polyline").waitFor();
  const legend = page.locator("#series-legend");
  await legend.filter({ hasText: "points" }).waitFor();
  const pointsIn = (text) => Number(/(\d+) points/.exec(text)?.[1] ?? 0);
  const before = await legend.textContent();
  console.log(`chart: ${before}`);
  if (pointsIn(before) < 2 || pointsIn(before) > 300) throw new Error(`a day's chart: ${before}`);
  await page.screenshot({ path: join(out, "chart.png") });
  const box = await chart.boundingBox();
  await page.mouse.move(box.x + box.width * 0.9, box.y + box.height / 2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.995, box.y + box.height / 2, { steps: 8 });
  await page.mouse.up();
  // The new range shows at once; its finer series (a smaller step) when the server has answered.
  const stepIn = (text) => Number(/step (\d+) s/.exec(text)?.[1] ?? 0);
  await page.waitForFunction((old) => {
    const text = document.querySelector("#series-legend")?.textContent ?? "";
    const step = Number(/step (\d+) s/.exec(text)?.[1] ?? 0);
    return step > 0 && step < old;
  }, stepIn(before));
  const after = await legend.textContent();
  console.log(`zoomed: ${after}`);
  if (!(pointsIn(after) > pointsIn(before))) throw new Error(`zooming in shows no finer series: ${before} → ${after}`);
  await page.screenshot({ path: join(out, "chart-zoomed.png") });
  await page.getByRole("button", { name: "Last hour" }).click();
  await page.waitForFunction((old) => (document.querySelector("#series-legend")?.textContent ?? "") !== old, after);
  await page.keyboard.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "detached" });

  step("the unit's panel offers its Grafana dashboard, a panel per output");
  await page.locator(`g.node[data-uuid="${unit("sensor").uuid}"]`).click();
  await page.getByRole("dialog", { name: "Unit sensor" }).waitFor();
  const download = page.locator("#grafana-dashboard");
  const href = await download.getAttribute("href");
  const board = JSON.parse(decodeURIComponent(href.slice(href.indexOf(",") + 1)));
  const outputs = unit("sensor").nodes.filter((n) => n.kind === "OUTPUT").map((n) => n.topicName).sort();
  const titles = board.panels.map((p) => p.title).sort();
  if (JSON.stringify(titles) !== JSON.stringify(outputs) || !(await download.getAttribute("download")).endsWith(".json")) {
    throw new Error(`the dashboard's panels ${titles} are not the outputs ${outputs}`);
  }
  await page.keyboard.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "detached" });

  step("start a rollout of the repository from its panel; it shows in the panel");
  await page.locator('g.node[data-kind="repo-unit"]').first().click();
  await page.getByRole("dialog", { name: "Repository Firmware" }).waitFor();
  await page.click("#start-rollout");
  await page.getByRole("dialog", { name: "Roll out Firmware" }).waitFor();
  await page.locator("#field-commit").waitFor();
  await page.fill("#field-batchSize", "1");
  await page.screenshot({ path: join(out, "form-rollout.png") });
  await page.press("#field-batchSize", "Enter");
  await page.getByRole("dialog", { name: "Repository Firmware" }).waitFor();
  const rollout = page.locator("#rollouts li").first();
  await rollout.waitFor();
  console.log(`rollout: ${await rollout.textContent()}`);
  await page.keyboard.press("Escape");
  await page.getByRole("dialog").waitFor({ state: "detached" });

  step("change the password, log out and log in with the new one");
  await page.click("#change-password");
  await page.fill("#field-oldPassword", "correct-horse-battery");
  await page.fill("#field-newPassword", "stable-horse-battery-2");
  await page.press("#field-newPassword", "Enter");
  await page.getByRole("dialog").waitFor({ state: "detached" });
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("dialog", { name: "Log in" }).waitFor();
  await page.fill("#field-login", "alice");
  await page.fill("#field-password", "stable-horse-battery-2");
  await page.press("#field-password", "Enter");
  await page.getByRole("dialog").waitFor({ state: "detached" });
  await page.locator('g.node[data-kind="repo-unit"]').first().waitFor();

  step("a phone-sized screen shows the same graph");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("#relayout");
  await page.screenshot({ path: join(out, "graph-phone.png") });

  step("as the admin: close registration, block alice, then delete her");
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByRole("dialog", { name: "Log in" }).waitFor();
  await page.fill("#field-login", adminLogin);
  await page.fill("#field-password", adminPassword);
  await page.press("#field-password", "Enter");
  await page.getByRole("dialog").waitFor({ state: "detached" });
  await page.click("#admin");
  const alice = page.locator('li.user[data-login="alice"]');
  await alice.waitFor();
  const broker = await page.locator("#mqtt-broker").textContent();
  if (!broker.includes(`:${brokerPort}`) || !broker.includes(`port ${portTaken} was taken`)) {
    throw new Error(`the admin panel does not show the broker's port: ${broker}`);
  }
  await page.uncheck("#field-registrationOpen");
  await page.click("#settings-form button[type=submit]");
  await page.getByRole("status").filter({ hasText: "Settings saved" }).waitFor();
  await page.selectOption("#status-alice", "BLOCKED");
  await page.getByRole("status").filter({ hasText: "Status changed" }).waitFor();
  const { users } = await api("{ users { login status } }");
  if (users.find((u) => u.login === "alice").status !== "BLOCKED") throw new Error("alice is not blocked");
  await page.screenshot({ path: join(out, "form-admin.png") });
  await alice.getByRole("button", { name: "Delete" }).click();
  await alice.getByRole("button", { name: "Really delete?" }).click();
  await alice.waitFor({ state: "detached" });

  if (problems.length) throw new Error(`the page reported errors:\n${problems.join("\n")}`);
  console.log(`ok: screenshots in ${out}`);
} catch (error) {
  // What the page looked like when it went wrong, beside the other screenshots.
  if (page) await page.screenshot({ path: join(out, "failure.png") }).catch(() => {});
  throw error;
} finally {
  await browser.close();
}
