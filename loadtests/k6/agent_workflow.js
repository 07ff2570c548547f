// user-journeys/agent-workflow.js: the seed's script as it wrote it; only BASE_URL and the account are filled in
import http from 'k6/http';
import { check, sleep } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000/v1';  // filled in: the loopback target (the bench sets BASE_URL)

export function agentWorkflow() {
  // Login
  let loginRes = http.post(`${BASE_URL}/auth/login`, JSON.stringify({
    email: 'agent@demo.stampede.local',  // filled in: the demo target's agent account
    password: 'LoadTest123!',
  }), {
    headers: { 'Content-Type': 'application/json' },
  });

  check(loginRes, {
    'login successful': (r) => r.status === 200,
  });

  const token = loginRes.json('token');
  const headers = {
    'Authorization': `Bearer ${token}`,
    'Content-Type': 'application/json',
  };

  sleep(1);

  // View dashboard (GET /escrows, /listings)
  let escrowsRes = http.get(`${BASE_URL}/escrows`, { headers });
  check(escrowsRes, {
    'escrows loaded': (r) => r.status === 200,
  });

  sleep(2);

  let listingsRes = http.get(`${BASE_URL}/listings`, { headers });
  check(listingsRes, {
    'listings loaded': (r) => r.status === 200,
  });

  sleep(1);

  // Create new escrow
  let createRes = http.post(`${BASE_URL}/escrows`, JSON.stringify({
    property_address: `${__VU}-${__ITER} Test St`,  // Unique per VU/iteration
    closing_date: '2025-12-31',
    purchase_price: Math.floor(Math.random() * 1000000) + 300000,
  }), { headers });

  check(createRes, {
    'escrow created': (r) => r.status === 201,
  });

  sleep(2);

  // View created escrow
  if (createRes.status === 201) {
    const escrowId = createRes.json('id');
    let detailRes = http.get(`${BASE_URL}/escrows/${escrowId}`, { headers });
    check(detailRes, {
      'escrow detail loaded': (r) => r.status === 200,
    });
  }

  sleep(1);
}
