"""The training loop: collect with epsilon-greedy acting, learn from replay, log, evaluate, save.

Step counting follows Stable-Baselines3's DQN: ``train_freq`` counts steps of the vector
env, ``learning_starts`` and ``target_update_interval`` count environment steps, and the
target is synced every ``target_update_interval // num_envs`` vector steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.checkpoint import checkpoint_metadata, save_checkpoint
from agents.config import TrainConfig, validate
from agents.dqn import DQNAgent, ModeDiagnostics, UpdateStats
from agents.envs import env_family, env_spec, make_env, make_vector_env, obs_dtype_name
from agents.envs.learning_signal import LearningSignal
from agents.evaluation import run_episodes
from agents.finite_guard import FiniteGuard
from agents.frame_replay import FrameReplayBuffer
from agents.frame_store import FrameSnapshots
from agents.interrupts import FINISHING_EPISODE, Interrupted, stop_requests
from agents.network_specs import network_spec
from agents.progress import Progress
from agents.replay import ReplayBuffer
from agents.run_dir import check_writable, create_run_dir, lock_run_dir, unlock_run_dir
from agents.schedules import learning_rate_at, linear_epsilon
from agents.snapshot import (
    env_state,
    generator_state,
    prefixed,
    read_snapshot,
    restore_env_state,
    set_generator_state,
    snapshot_dir,
    unprefixed,
    write_snapshot,
)
from agents.tb_logger import RunLogger
from qnorm import QnormError

StopRule = Callable[[int, float], bool]


@dataclass
class TrainResult:
    """Where a finished run wrote its outputs, and how its evaluations went."""

    run_dir: Path
    final_checkpoint: Path
    best_checkpoint: Path | None
    evaluations: list[tuple[int, float]] = field(default_factory=list)  # (step, mean return)
    global_step: int = 0


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise QnormError("device 'cuda' was asked for, but no CUDA GPU is available")
    return torch.device(name)


def train(
    config: TrainConfig, should_stop: StopRule | None = None, resume: bool = False
) -> TrainResult:
    """Check everything, then train; nothing is written until every check has passed.

    ``should_stop(step, mean_return)`` is asked after each greedy evaluation; True ends the
    run there (the final checkpoint is still written). ``resume`` continues the run in
    ``config.run.run_dir`` from its training-state snapshot.
    """
    validate(config)
    device = resolve_device(config.run.device)
    envs = make_vector_env(config.run.env_id, config.run.num_envs)
    eval_env, flush = None, False
    try:
        flush = config.run.flush_denormal and device.type == "cpu"
        if flush:  # process-wide in torch: switched back off when the run ends
            torch.set_flush_denormal(True)
        agent = _build_agent(config, envs, device)
        eval_env = make_env(config.run.env_id) if config.run.eval_freq else None
        if config.run.stop_when_solved:
            should_stop = _solved_rule(config.run.env_id, should_stop)
        return _start_or_resume(config, envs, eval_env, agent, should_stop, resume)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        envs.close()
        if eval_env is not None:
            eval_env.close()


def _build_agent(config: TrainConfig, envs, device: torch.device) -> DQNAgent:
    """The agent whose network fits the env's spaces, on ``device``."""
    spec = network_spec(
        config,
        envs.single_observation_space,
        int(envs.single_action_space.n),
        env_family(config.run.env_id).conv_preset,
    )
    torch.set_num_threads(config.run.torch_threads)
    return DQNAgent(spec, config.dqn, device, seed=config.run.seed)


def _start_or_resume(config, envs, eval_env, agent, should_stop, resume: bool) -> TrainResult:
    """Train in a new run directory, or continue the one in ``config.run.run_dir``; the
    directory is locked while it trains."""
    if not resume:
        run_dir = create_run_dir(config)
        try:
            return Trainer(config, envs, eval_env, agent, run_dir, should_stop).run()
        finally:
            unlock_run_dir(run_dir)
    run_dir = Path(config.run.run_dir)
    lock_run_dir(run_dir)
    try:
        check_writable(run_dir)
        return _resume(config, envs, eval_env, agent, run_dir, should_stop)
    finally:
        unlock_run_dir(run_dir)


def _resume(config, envs, eval_env, agent, run_dir: Path, should_stop) -> TrainResult:
    """Continue the run in ``run_dir`` from its snapshot."""
    tensors, state = read_snapshot(run_dir)
    agent.load_state_tensors(tensors)  # a snapshot that does not fit fails before any write
    try:
        step = int(state["global_step"])
        if step > config.run.total_timesteps:
            raise QnormError(
                f"the snapshot is at step {step:,}, past --total-timesteps "
                f"{config.run.total_timesteps:,}"
            )
        # Everything logged at the snapshot's step came before it was written: keep that.
        trainer = Trainer(config, envs, eval_env, agent, run_dir, should_stop, purge_step=step + 1)
        trainer.restore(tensors, state)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise QnormError(
            f"the snapshot in {snapshot_dir(run_dir)} is incomplete or damaged ({exc!r})"
        ) from None
    return trainer.run()


def _solved_rule(env_id: str, other: StopRule | None) -> StopRule:
    """Stop once a greedy evaluation reaches the env's registered reward threshold."""
    threshold = env_spec(env_id).reward_threshold
    if threshold is None:
        raise QnormError(f"{env_id} has no reward threshold, so stop_when_solved cannot apply")

    def rule(step: int, mean_return: float) -> bool:
        return mean_return >= threshold or (other is not None and other(step, mean_return))

    return rule


def make_replay(config: TrainConfig, space, frame_stack: int, device: torch.device):
    """Vector observations: the transition buffer; images: the buffer storing each frame once."""
    shape, dqn = tuple(space.shape), config.dqn
    common = {"device": device, "seed": config.run.seed, "num_envs": config.run.num_envs}
    common.update(n_step=dqn.n_step, gamma=dqn.gamma)
    if len(shape) == 1:
        return ReplayBuffer(dqn.buffer_size, shape, space.dtype, **common)
    return FrameReplayBuffer(dqn.buffer_size, shape, space.dtype, frame_stack=frame_stack, **common)


class Trainer:
    """One run's loop and bookkeeping."""

    def __init__(
        self,
        config: TrainConfig,
        envs,
        eval_env,
        agent: DQNAgent,
        run_dir: Path,
        should_stop: StopRule | None = None,
        purge_step: int | None = None,
    ):
        self.should_stop = should_stop
        self.stopped = False
        self.config, self.run_cfg, self.dqn = config, config.run, config.dqn
        self.envs, self.eval_env, self.agent, self.run_dir = envs, eval_env, agent, run_dir
        space = envs.single_observation_space
        self.obs_shape, self.obs_dtype = tuple(space.shape), obs_dtype_name(space)
        family = env_family(config.run.env_id)
        self.buffer = make_replay(config, space, family.frame_stack, agent.device)
        # Reward clipping and life-loss terminals shape what is learned, never what is logged.
        self.signal = LearningSignal(family, config.run.num_envs)
        self.purge_step = purge_step  # the logger opens in run(): a refused resume writes nothing
        self.logger: RunLogger | None = None
        self.guard = FiniteGuard(config.run.env_id)
        self.global_step = 0
        self.num_updates = 0
        self.best_return = -np.inf
        self.best_checkpoint: Path | None = None
        self.evaluations: list[tuple[int, float]] = []
        self.recent_returns: list[float] = []
        # Training-state snapshots; a frame replay keeps its frames in chunk files beside them.
        frame_replay = isinstance(self.buffer, FrameReplayBuffer)
        self.frames = FrameSnapshots(run_dir, self.buffer) if frame_replay else None
        self.next_state_step = self.run_cfg.state_freq
        self.resumed: tuple[dict, dict] | None = None

    def run(self) -> TrainResult:
        """Train for ``total_timesteps`` environment steps and write the final checkpoint."""
        n_envs = self.run_cfg.num_envs
        iterations = -(-self.run_cfg.total_timesteps // n_envs)
        first, obs, just_reset = self.start()
        self.logger = RunLogger(self.run_dir, self.config.to_dict(), self.purge_step)
        iteration = first - 1  # a resumed run with no steps left runs no iteration
        progress = Progress(iterations * n_envs, self.run_cfg.progress, initial=self.global_step)
        clock = (time.perf_counter(), self.global_step)  # this process's start, for SPS
        # Ctrl-C or SIGTERM: finish the step (Ctrl-C: the episode), save a snapshot and the
        # final checkpoint, stop (agents.interrupts has the rules).
        with stop_requests() as requests:
            try:
                for iteration in range(first, iterations + 1):
                    obs, just_reset = self.iterate(iteration, obs, just_reset, clock, progress)
                    if requests.received and requests.check(
                        self.global_step, self.mid_episode(just_reset)
                    ):
                        progress.note(FINISHING_EPISODE)
                    if self.stopped:
                        break
                progress.finish(self.global_step)
            except Interrupted as stop:
                requests.saving = True
                stop.step, stop.checkpoint = self.global_step, self.save("final")
                if stop.clean and self.write_state(iteration, obs, just_reset):
                    stop.snapshot = snapshot_dir(self.run_dir)
                    stop.fresh_episodes_on_resume = not bool(just_reset.all())
                raise
            finally:
                progress.close()
                self.logger.close()
        final = self.save("final")
        self.write_state(iteration, obs, just_reset)  # lets --total-timesteps extend the run
        return TrainResult(
            self.run_dir, final, self.best_checkpoint, self.evaluations, self.global_step
        )

    def iterate(self, iteration: int, obs, just_reset, clock: tuple, progress: Progress):
        """One vector-env step, then whatever falls due: target sync, updates, logs, saves."""
        n_envs = self.run_cfg.num_envs
        epsilon = self.epsilon()
        obs, just_reset = self.collect(obs, just_reset, epsilon)
        if iteration % max(self.dqn.target_update_interval // n_envs, 1) == 0:
            self.agent.sync_target()
        if (
            iteration % self.dqn.train_freq == 0
            and self.global_step > self.dqn.learning_starts
            # learning_starts may be below batch_size (0 in the Acrobot preset)
            and len(self.buffer) >= self.dqn.batch_size
        ):
            self.learn()
        self.periodic(iteration, n_envs, clock, epsilon, progress)
        if self.snapshot_due(just_reset):
            self.write_state(iteration, obs, just_reset)
        return obs, just_reset

    def start(self) -> tuple[int, np.ndarray, np.ndarray]:
        """The first iteration, observations and reset flags: fresh, or where a snapshot left."""
        n_envs = self.run_cfg.num_envs
        if self.resumed is None:
            obs, _ = self.envs.reset(seed=self.run_cfg.seed)
            return 1, obs, np.zeros(n_envs, dtype=bool)
        tensors, state = self.resumed
        if restore_env_state(self.envs, state["env"], self.run_cfg.seed):
            obs, just_reset = tensors["trainer.obs"].numpy(), tensors["trainer.just_reset"].numpy()
        else:  # not at an episode boundary: fresh episodes from here
            obs, _ = self.envs.reset(seed=self.run_cfg.seed + state["global_step"])
            just_reset = np.zeros(n_envs, dtype=bool)
            self.buffer.end_episodes()
        return state["iteration"] + 1, obs, just_reset

    def mid_episode(self, just_reset: np.ndarray) -> bool:
        """One env, inside an episode: a snapshot here would not resume exactly."""
        return self.run_cfg.num_envs == 1 and not bool(just_reset.all())

    def snapshot_due(self, just_reset: np.ndarray) -> bool:
        """Past the next snapshot step, and (one env) at an episode boundary."""
        if not self.run_cfg.state_freq or self.global_step < self.next_state_step:
            return False
        return bool(just_reset.all()) or self.run_cfg.num_envs > 1

    def write_state(self, iteration: int, obs: np.ndarray, just_reset: np.ndarray) -> bool:
        """Write the training-state snapshot of this point of the run; False if there is none."""
        freq = self.run_cfg.state_freq
        if not freq:
            return False
        self.next_state_step = (self.global_step // freq + 1) * freq
        for net in (self.agent.online, self.agent.target):  # never replace a good snapshot
            if net is not None:  # the joint update has no target network
                self.guard.check_parameters(net, self.global_step, "snapshot")
        at_boundary = bool(just_reset.all())
        tensors = {
            **self.agent.state_tensors(),
            **prefixed("replay", self.buffer.state_tensors()),
            "trainer.obs": torch.as_tensor(np.ascontiguousarray(obs)),
            "trainer.just_reset": torch.as_tensor(just_reset),
            "torch.rng": torch.get_rng_state(),
        }
        state = {
            "iteration": iteration,
            "global_step": self.global_step,
            "num_updates": self.num_updates,
            "next_state_step": self.next_state_step,
            "best_return": None if np.isneginf(self.best_return) else self.best_return,
            "best_checkpoint": None if self.best_checkpoint is None else str(self.best_checkpoint),
            "last_good": None if self.guard.last_good is None else str(self.guard.last_good),
            "evaluations": self.evaluations,
            "recent_returns": self.recent_returns,
            "replay": self.replay_state(),
            "agent_rng": generator_state(self.agent.rng),
            "lives": self.signal.lives.tolist(),
            "env": env_state(self.envs, at_boundary),
        }
        write_snapshot(self.run_dir, tensors, state)
        if self.frames is not None:
            self.frames.committed()
        self.guard.last_snapshot = (snapshot_dir(self.run_dir), self.global_step)
        return True

    def replay_state(self) -> dict:
        """The replay's part of ``state.json``; a frame replay's changed frames written first."""
        state = self.buffer.state()
        if self.frames is not None:
            state["frames"] = self.frames.write()
        return state

    def restore(self, tensors: dict, state: dict) -> None:
        """Put the replay, counters and random states back as ``write_state`` saved them.

        The agent's networks and optimizer are loaded first, by ``train``.
        """
        self.buffer.load_state(unprefixed("replay", tensors), state["replay"])
        if self.frames is not None:
            self.frames.restore(state["replay"]["frames"])
        torch.set_rng_state(tensors["torch.rng"])
        set_generator_state(self.agent.rng, state["agent_rng"])
        self.global_step, self.num_updates = state["global_step"], state["num_updates"]
        self.next_state_step = state["next_state_step"]
        best = state["best_return"]
        self.best_return = -np.inf if best is None else best
        path = state["best_checkpoint"]
        self.best_checkpoint = None if path is None else Path(path)
        self.guard.last_good = None if state["last_good"] is None else Path(state["last_good"])
        self.guard.last_snapshot = (snapshot_dir(self.run_dir), state["global_step"])
        self.evaluations = [tuple(e) for e in state["evaluations"]]
        self.recent_returns = list(state["recent_returns"])
        self.signal.lives = np.asarray(state["lives"], dtype=np.int64)
        self.resumed = (tensors, state)

    def epsilon(self) -> float:
        """Current exploration rate (SB3's linear schedule over total_timesteps)."""
        return linear_epsilon(
            self.global_step,
            self.run_cfg.total_timesteps,
            self.dqn.exploration_fraction,
            self.dqn.exploration_initial_eps,
            self.dqn.exploration_final_eps,
        )

    def collect(self, obs: np.ndarray, just_reset: np.ndarray, epsilon: float):
        """One vector-env step; store every transition except those crossing an autoreset."""
        if self.global_step < self.dqn.learning_starts:
            actions = self.agent.rng.integers(self.agent.spec.num_actions, size=len(obs))
        else:
            actions = self.agent.act(obs, epsilon)
        try:
            next_obs, rewards, terminated, truncated, infos = self.envs.step(actions)
        except QnormError:
            raise
        except Exception as exc:  # the env's own code failed: name it, not qnorm's loop
            raise QnormError(
                f"{self.run_cfg.env_id} raised {type(exc).__name__} in step() at step "
                f"{self.global_step + len(obs)}: {' '.join(str(exc).split())}"
                f"{self.guard.last_good_text()}"
            ) from exc
        self.global_step += len(obs)
        self.guard.check_env(next_obs, rewards, self.global_step)
        learned_rewards = self.signal.rewards(rewards)
        learned_terminated = self.signal.terminated(terminated, infos, just_reset)
        keep = ~just_reset  # in next-step autoreset mode, this step only reset those envs
        if keep.all():
            self.buffer.add(obs, actions, learned_rewards, next_obs, learned_terminated, truncated)
        elif keep.any():
            self.buffer.add(
                obs[keep],
                actions[keep],
                learned_rewards[keep],
                next_obs[keep],
                learned_terminated[keep],
                truncated[keep],
                env_ids=np.flatnonzero(keep),
            )
        if "episode" in infos:
            self.log_episodes(infos)
        return next_obs, terminated | truncated

    def log_episodes(self, infos: dict) -> None:
        """Log each episode that ended on this step."""
        finished = infos["_episode"]
        for r, length in zip(
            infos["episode"]["r"][finished], infos["episode"]["l"][finished], strict=True
        ):
            self.logger.episode(float(r), int(length), self.global_step)
            self.recent_returns = [*self.recent_returns[-9:], float(r)]

    def learn(self) -> None:
        """One update phase: ``gradient_steps`` updates on uniformly sampled minibatches."""
        steps = self.dqn.gradient_steps
        if steps == -1:
            steps = self.dqn.train_freq * self.run_cfg.num_envs
        if self.dqn.lr_schedule != "constant":
            lr = learning_rate_at(
                self.global_step,
                self.run_cfg.total_timesteps,
                self.dqn.learning_rate,
                self.dqn.lr_schedule,
            )
            self.agent.set_learning_rate(lr)
            self.logger.scalar("charts/learning_rate", lr, self.global_step)
        first = self.num_updates + 1
        diagnose = [i for i in range(steps) if self.every(first + i, self.run_cfg.diagnostics_freq)]
        batches = self.buffer.sample_batches(steps, self.dqn.batch_size)
        for i, stats in enumerate(self.agent.update_phase(batches, diagnose)):
            if self.every(first + i, self.run_cfg.log_freq):
                self.log_losses(stats, first + i)
            if stats.diagnostics is not None:
                self.log_diagnostics(stats.diagnostics)
        self.num_updates += steps
        # A non-finite value spreads to every later update, so the phase's last one tells.
        self.guard.check_update(stats.td_loss, self.global_step)

    @staticmethod
    def every(count: int, interval: int) -> bool:
        """Whether ``count`` is a multiple of ``interval`` (never, for interval 0)."""
        return interval > 0 and count % interval == 0

    def log_losses(self, stats: UpdateStats, update: int) -> None:
        """TD loss and mean Q(s, a); the only place an update's values reach the host."""
        self.logger.scalar("losses/td_loss", stats.td_loss.item(), self.global_step)
        self.logger.scalar("losses/q_values", stats.q_values.item(), self.global_step)
        self.logger.scalar("charts/updates", update, self.global_step)

    def log_diagnostics(self, diagnostics: ModeDiagnostics) -> None:
        """What eval-mode action selection costs, and the norms' running statistics."""
        step = self.global_step
        self.logger.scalar("norm/q_train_eval_gap", diagnostics.q_gap, step)
        self.logger.scalar("norm/greedy_agreement", diagnostics.greedy_agreement, step)
        if diagnostics.target_stats_gap is not None:
            self.logger.scalar("norm/target_stats_gap", diagnostics.target_stats_gap, step)
        self.logger.norm_statistics(self.agent.online, step)
        self.logger.weight_norms(self.agent.online, step)

    def periodic(
        self, iteration: int, n_envs: int, start: tuple, epsilon: float, progress: Progress
    ) -> None:
        """Progress, speed, evaluation and checkpoints at their own intervals."""
        step = self.global_step
        if self.crossed(step, n_envs, 1000):
            began, first_step = start  # this process's start: a resumed run counts from there
            sps = (step - first_step) / max(time.perf_counter() - began, 1e-9)
            self.logger.scalar("charts/SPS", sps, step)
            self.logger.scalar("charts/epsilon", epsilon, step)
            last = self.recent_returns[-1] if self.recent_returns else None
            progress.update(step, sps, epsilon, last)
        if self.run_cfg.eval_freq and self.crossed(step, n_envs, self.run_cfg.eval_freq):
            self.evaluate()
        if self.run_cfg.checkpoint_freq and self.crossed(
            step, n_envs, self.run_cfg.checkpoint_freq
        ):
            self.save(str(step))

    @staticmethod
    def crossed(step: int, n_envs: int, every: int) -> bool:
        """Whether the last vector step crossed a multiple of ``every`` environment steps."""
        return step // every > (step - n_envs) // every

    def evaluate(self) -> None:
        """Greedy episodes on the separate eval env; the best policy so far is kept."""
        seed = self.run_cfg.seed + 10_000
        result = run_episodes(self.agent.online, self.eval_env, self.run_cfg.eval_episodes, seed)
        self.logger.scalar("eval/mean_return", result.mean_return, self.global_step)
        self.logger.scalar("eval/std_return", result.std_return, self.global_step)
        self.evaluations.append((self.global_step, result.mean_return))
        if self.should_stop is not None and self.should_stop(self.global_step, result.mean_return):
            self.stopped = True
        if result.mean_return > self.best_return:
            self.best_return = result.mean_return
            self.best_checkpoint = self.save("best")

    def evaluation_here(self) -> dict | None:
        """The greedy evaluation of the current weights, if one was just run at this step."""
        if not self.evaluations or self.evaluations[-1][0] != self.global_step:
            return None
        step, mean_return = self.evaluations[-1]
        return {"step": step, "mean_return": mean_return, "episodes": self.run_cfg.eval_episodes}

    def save(self, name: str) -> Path:
        """Write checkpoints/<name>/ atomically, from finite weights only."""
        self.guard.check_parameters(self.agent.online, self.global_step)
        metadata = checkpoint_metadata(
            self.agent.spec,
            self.run_cfg.env_id,
            self.obs_shape,
            self.obs_dtype,
            self.global_step,
            self.config.to_dict(),
            self.agent.target_scheme,
            self.evaluation_here(),
        )
        path = save_checkpoint(self.run_dir / "checkpoints" / name, self.agent.online, metadata)
        self.guard.last_good = path
        return path
