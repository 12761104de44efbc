// pagewire ws.js (placeholder until the full client lands)
