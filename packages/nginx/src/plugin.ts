import { defineProxy } from "@nodrop/core";
import { NGINX_CAPABILITIES, nginxProxy } from "./nginx.js";
import { type NginxOptions, nginxOptionsSchema } from "./options.js";

/** The nginx adapter as a plugin: what `proxy: { use: nginx }` (or this package's name) loads. */
export const nginxPlugin = defineProxy<NginxOptions>({
  name: "nginx",
  optionsSchema: nginxOptionsSchema,
  capabilities: NGINX_CAPABILITIES,
  // A client that DNS sends to another proxy carries its pin in this cookie: every proxy reads the same one.
  sharedOptions: ["versionCookie"],
  create: ({ app, options, executor }) => nginxProxy({ ...options, app, executor }),
});
