// The seed's normal-load.js (scenarios/normal-load.js) with its stages set by the bench:
// ramp to VUS in RAMP_S, hold for HOLD_S, then stop. The iteration is the seed's own:
// agentWorkflow() and a random 3-8 s think time. `make bench` runs it side by side with
// bare Locust and Stampede's agent journey (stampede.surfaces.bench.peers).
import { sleep } from 'k6';
import { agentWorkflow } from './agent_workflow.js';

const VUS = parseInt(__ENV.VUS || '2000', 10);

export let options = {
  stages: [
    { duration: `${__ENV.RAMP_S || 10}s`, target: VUS },
    { duration: `${__ENV.HOLD_S || 40}s`, target: VUS },
  ],
  gracefulRampDown: '0s',
  // loopback only: every address but 127.0.0.0/8 is refused by k6's dialer, and names resolve to nothing else
  blacklistIPs: [
    '0.0.0.0/2', '64.0.0.0/3', '96.0.0.0/4', '112.0.0.0/5', '120.0.0.0/6', '124.0.0.0/7', '126.0.0.0/8',
    '128.0.0.0/1', '::/1', '8000::/1',
  ],
  hosts: { 'localhost': '127.0.0.1' },
  summaryTrendStats: ['avg', 'med', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  agentWorkflow();
  sleep(Math.random() * 5 + 3);  // Random think time 3-8 seconds
}
