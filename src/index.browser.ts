// The package entry for browsers (the "browser" condition in package.json's exports): installs the browser
// platform, then exports the public API.
import { setPlatform } from './platform/platform.js';
import { browserPlatform } from './platform/browser.js';

setPlatform(browserPlatform);

export * from './api.js';
export { fileListTree, urlTree } from './platform/browser-files.js';
