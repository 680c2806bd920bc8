// The shared TinyStories checkpoint's bytes that the file-reading tests check: its size, and a slice whose hash was
// computed with Python's hashlib from the same file (model.norm.weight: 512 bytes at NORM_OFFSET).
export const MODEL = 'models/tinystories-656k/model.safetensors';
export const FILE_SIZE = 2_626_168;
export const NORM_OFFSET = 8 + 2160 + 2_623_488;
export const NORM_SHA256 = '2d2f0547256f543ff354d42e44f2b36ed0f7c57b5d1d5da779942d69d509e290';

export async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', bytes.slice()); // a copy: digest() wants a plain ArrayBuffer
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}
