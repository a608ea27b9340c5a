// GraphiQL offline: opens the server's /graphql in headless Chromium with every request to another host
// than the server's blocked, runs `{ __typename }` and waits for the answer. Run by backend/tests/browser.rs.
//
// Environment: PEPEUNIT_URL (the server), PEPEUNIT_E2E_OUT (where the screenshot goes), CHROMIUM.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.PEPEUNIT_URL;
const out = process.env.PEPEUNIT_E2E_OUT;
if (!base || !out) throw new Error("set PEPEUNIT_URL and PEPEUNIT_E2E_OUT");
mkdirSync(out, { recursive: true });
const server = new URL(base);

const problems = [];
const blocked = [];
const served = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // The machine offline: only the server itself answers.
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.host !== server.host) {
      blocked.push(url.href);
      return route.abort("internetdisconnected");
    }
    served.push(url.pathname);
    return route.continue();
  });
  page = await context.newPage();
  page.setDefaultTimeout(30000);
  // A CSP violation or a failed script shows as a console error.
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

  console.log("step: open /graphql");
  await page.goto(new URL("/graphql", base).href);
  const editor = page.locator(".graphiql-query-editor .CodeMirror");
  await editor.waitFor();

  console.log("step: run { __typename }");
  await page.evaluate(() => {
    document.querySelector(".graphiql-query-editor .CodeMirror").CodeMirror.setValue("{ __typename }");
  });
  await page.click(".graphiql-execute-button");
  await page.locator(".graphiql-response", { hasText: "QueryRoot" }).waitFor();
  await page.screenshot({ path: join(out, "graphiql.png") });

  if (blocked.length) problems.push(`requests that would leave the machine: ${blocked.join(", ")}`);
  if (!served.some((p) => p.startsWith("/graphql/assets/graphiql-"))) {
    problems.push(`GraphiQL was not loaded from the server: ${served.join(", ")}`);
  }
  if (problems.length) throw new Error(problems.join("\n"));
  console.log(`GraphiQL answered offline; served: ${served.join(", ")}`);
} catch (error) {
  if (page) await page.screenshot({ path: join(out, "graphiql-failure.png") }).catch(() => {});
  console.error(problems.join("\n"));
  throw error;
} finally {
  await browser.close();
}
