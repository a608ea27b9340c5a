// The browser test of federation in the web app, against two real instances A and B that
// backend/tests/browser.rs starts (a unit "greenhouse" on B has published a value; alice on A has a unit
// "display").
//
// A's admin asks B to peer in the Federation panel; B's admin sees the request there and accepts it; alice on A pastes the greenhouse's
// address into the remote unit dialog, sees its output with its last value, links it into the display
// and sees the mirror node on the canvas, drawn as living on B; B's admin sees A follow the greenhouse;
// alice on B blocks A from the greenhouse on its unit panel, and A's canvas shows the mirror unavailable.
//
// Environment: PEPEUNIT_A_URL, PEPEUNIT_B_URL (the instances, as their public URLs), PEPEUNIT_A_DOMAIN,
// PEPEUNIT_B_DOMAIN, PEPEUNIT_ADMIN and PEPEUNIT_USER (login:password, the same on both), PEPEUNIT_REMOTE
// (the greenhouse as uuid@domain), PEPEUNIT_VALUE (its last value), PEPEUNIT_E2E_OUT (screenshots),
// CHROMIUM (browser binary).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`set ${name}`);
  return value;
};
const aUrl = env("PEPEUNIT_A_URL");
const bUrl = env("PEPEUNIT_B_URL");
const aDomain = env("PEPEUNIT_A_DOMAIN");
const bDomain = env("PEPEUNIT_B_DOMAIN");
const [adminLogin, adminPassword] = env("PEPEUNIT_ADMIN").split(":");
const [userLogin, userPassword] = env("PEPEUNIT_USER").split(":");
const remote = env("PEPEUNIT_REMOTE");
const value = env("PEPEUNIT_VALUE");
const out = env("PEPEUNIT_E2E_OUT");
mkdirSync(out, { recursive: true });

const step = (what) => console.log(`step: ${what}`);
const problems = [];
const pages = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

// A logged-in page of its own (a browser context each: sessions live in local storage per origin).
async function session(url, login, password, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  page.on("console", (m) => { if (m.type() === "error") problems.push(`${name} console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`${name} page error: ${e.message}`));
  pages.push([name, page]);
  await page.goto(url);
  await page.getByRole("dialog", { name: "Log in" }).waitFor();
  await page.fill("#field-login", login);
  await page.fill("#field-password", password);
  await page.press("#field-password", "Enter");
  await page.getByRole("dialog").waitFor({ state: "detached" });
  return page;
}

try {
  step("A's admin asks B to peer in the Federation panel");
  const aAdmin = await session(aUrl, adminLogin, adminPassword, "A admin");
  await aAdmin.click("#federation");
  await aAdmin.getByRole("dialog", { name: "Federation" }).waitFor();
  await aAdmin.fill("#instance-form input[name=address]", bUrl);
  await aAdmin.click("#request-peering");
  await aAdmin.locator(`li.peer-requested[data-domain="${bDomain}"]`).filter({ hasText: "waiting for their answer" }).waitFor();

  step("B's admin opens the Federation panel: A's request waits there");
  const bAdmin = await session(bUrl, adminLogin, adminPassword, "B admin");
  await bAdmin.click("#federation");
  const panel = bAdmin.getByRole("dialog", { name: "Federation" });
  await panel.waitFor();
  const mode = await bAdmin.locator("#federation-mode").textContent();
  if (!mode.includes("trusted peers only")) throw new Error(`federation mode: ${mode}`);
  const actor = await bAdmin.locator("#federation-actor").textContent();
  if (actor !== `${bUrl}/federation/actor`) throw new Error(`actor URL: ${actor}`);
  const request = bAdmin.locator(`li.peer[data-domain="${aDomain}"]`);
  await request.filter({ hasText: "asks to peer" }).waitFor();

  step("B's admin accepts; A becomes a peer");
  await request.getByRole("button", { name: "Accept" }).click();
  await bAdmin.locator(`li.peer-accepted[data-domain="${aDomain}"]`).waitFor();
  await bAdmin.getByRole("status").filter({ hasText: "Peering accepted" }).waitFor();
  await bAdmin.screenshot({ path: join(out, "federation-panel.png") });
  await aAdmin.getByRole("button", { name: "Close" }).click();
  await aAdmin.click("#federation");
  await aAdmin.locator(`li.peer-accepted[data-domain="${bDomain}"]`).waitFor();

  step("alice on A previews the greenhouse of B: its output and last value, nothing followed yet");
  const a = await session(aUrl, userLogin, userPassword, "A alice");
  await a.locator('g.node[data-kind="unit"]').first().waitFor();
  await a.click("#remote-unit");
  await a.getByRole("dialog", { name: "Remote unit" }).waitFor();
  await a.fill("#field-unit", remote);
  await a.getByRole("button", { name: "Show outputs" }).click();
  const row = a.locator('tr[data-output="current_temp/pepeunit"]');
  await row.waitFor();
  const shown = await row.locator("td.value").textContent();
  if (shown !== value) throw new Error(`the preview shows ${shown}, not ${value}`);
  const heading = await a.locator("#remote-unit-outputs h3").textContent();
  if (!heading.includes("greenhouse") || !heading.includes(bDomain)) throw new Error(`preview heading: ${heading}`);
  await a.screenshot({ path: join(out, "remote-unit-preview.png") });

  step("alice links the output into the display's input; the mirror node appears, read-only, from B");
  await a.selectOption("#field-output", "current_temp/pepeunit");
  await a.selectOption("#field-inputUuid", { label: "display · set_fan_state" });
  await a.click("#remote-unit-link button[type=submit]");
  await a.getByRole("dialog").waitFor({ state: "detached" });
  const mirror = a.locator(`g[data-kind="mirror"][data-domain="${bDomain}"][data-available="true"]`);
  await mirror.waitFor();
  await mirror.locator(`text.detail[data-value="${value}"]`).waitFor();
  const label = await mirror.getAttribute("aria-label");
  if (!label.includes(bDomain) || !label.includes("greenhouse")) throw new Error(`mirror label: ${label}`);
  if ((await a.locator("path.mirror-link").count()) < 1) throw new Error("no edge from the mirror to the input");
  // Read-only: clicking it opens nothing.
  await mirror.click();
  if (await a.getByRole("dialog").count()) throw new Error("a mirror node opened a dialog");
  await a.screenshot({ path: join(out, "mirror-node.png") });

  step("B's admin sees A follow the greenhouse");
  await bAdmin.getByRole("button", { name: "Close" }).click();
  await bAdmin.click("#federation");
  await bAdmin.locator("#federation-followers li").filter({ hasText: aDomain }).filter({ hasText: "greenhouse" }).waitFor();

  step("alice on B blocks A from the greenhouse on its unit panel");
  const bAlice = await session(bUrl, userLogin, userPassword, "B alice");
  await bAlice.locator('g.node[data-kind="unit"][aria-label*="greenhouse"]').click();
  await bAlice.getByRole("dialog", { name: "Unit greenhouse" }).waitFor();
  await bAlice.fill("#block-for-unit input[name=address]", aDomain);
  await bAlice.getByRole("button", { name: "Block from this unit" }).click();
  await bAlice.locator(`#unit-blocks li[data-domain="${aDomain}"]`).waitFor();
  await bAlice.screenshot({ path: join(out, "unit-blocks.png") });

  step("A's canvas shows the mirror unavailable");
  await a.locator(`g[data-kind="mirror"][data-domain="${bDomain}"][data-available="false"]`).waitFor({ timeout: 60000 });
  await a.screenshot({ path: join(out, "mirror-unavailable.png") });

  if (problems.length) throw new Error(`the pages reported errors:\n${problems.join("\n")}`);
  console.log(`ok: screenshots in ${out}`);
} catch (error) {
  for (const [name, page] of pages) {
    await page.screenshot({ path: join(out, `federation-failure-${name.replace(" ", "-")}.png`) }).catch(() => {});
  }
  throw error;
} finally {
  await browser.close();
}
