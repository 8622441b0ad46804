// Minimal service worker so browsers offer "Install"/"Add to Home Screen".
// It caches nothing: every page and command must reach the live car.
self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));
self.addEventListener('fetch', () => {});
