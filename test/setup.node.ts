import { setPlatform } from '../src/platform/platform.js';
import { nodePlatform } from '../src/platform/node.js';

setPlatform(nodePlatform);
