// Progressive enhancement only: every public page works without this file.
// GOV.UK Frontend styles some components differently once it knows scripts run.
import { initAll } from "/static/vendor/govuk/govuk-frontend.min.js";

document.body.classList.add("js-enabled", "govuk-frontend-supported");
initAll();
