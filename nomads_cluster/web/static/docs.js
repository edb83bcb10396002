// Swagger UI on the service's own OpenAPI document (a file, not an inline script).
"use strict";

const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  domNode: root,
  deepLinking: true,
  tryItOutEnabled: true,
  displayRequestDuration: true,
});
