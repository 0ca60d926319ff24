/** The activity interceptors every pgmove worker runs with (also used by tests that build a worker). */
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { classifyErrorsInterceptor } from './classify-errors';
import { livenessHeartbeatInterceptor } from './liveness-heartbeat';

export const activityInterceptors: ActivityInterceptorsFactory[] = [livenessHeartbeatInterceptor, classifyErrorsInterceptor];
