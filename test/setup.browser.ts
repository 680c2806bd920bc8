// Setup for the `browser` test project (headless Chromium): the browser side of the platform seam.
import { setPlatform } from '../src/platform/platform.js';
import { browserPlatform } from '../src/platform/browser.js';

setPlatform(browserPlatform);
