// The browsable API docs: Swagger UI, vendored (vendor/swagger-ui), over the hub's own
// OpenAPI document. No validator badge: it would call validator.swagger.io.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  onComplete: () => {
    // the console's token, when this tab has one, so "Try it out" works at once
    const token = sessionStorage.getItem("edgeward.token");
    if (token) window.ui.preauthorizeApiKey("bearer", token);
  },
});
