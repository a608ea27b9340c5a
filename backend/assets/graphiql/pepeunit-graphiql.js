// Starts GraphiQL against this server: queries and mutations over HTTP at the page's own path, subscriptions
// over WebSocket beside it. A separate file rather than an inline script, so a strict CSP applies.
(function () {
  "use strict";
  var path = window.location.pathname.replace(/\/+$/, "");
  var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  var fetcher = GraphiQL.createFetcher({
    url: path,
    subscriptionUrl: scheme + window.location.host + path + "/ws",
  });
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
  );
})();
