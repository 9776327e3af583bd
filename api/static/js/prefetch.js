// Starts the current page's first reads as soon as this tiny module arrives (it is loaded
// async, before the page's own modules, uPlot included, have downloaded and run), so the
// network and the server work while the code loads. The pages then ask for the same paths
// and get these responses.
import { prefetch, token } from "./api.js";
import { fleetPath, recentRunsPath, runHistoryPath, runPath } from "./paths.js";

// If main.js got there first, the pages already asked: asking again would only double the work.
if (token() && !window.__assayStarted) {
  const parts = location.hash.replace(/^#\/?/, "").split("?")[0].split("/").map(decodeURIComponent);
  prefetch("/api/whoami");
  if (!parts[0]) {
    prefetch(fleetPath());
    prefetch(recentRunsPath());
  } else if (parts[0] === "runs" && parts[1] && /^[A-Za-z0-9]{1,64}$/.test(parts[1])) {
    prefetch(runPath(parts[1]));
    prefetch(runHistoryPath(parts[1]));
  }
}
