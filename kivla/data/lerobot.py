"""LeRobot v3.0 datasets: `generate_dataset` (from the built-in world), `LeRobotDataset` (reader)."""

from kivla.data.lerobot_read import LeRobotDataset, decode_frames
from kivla.data.lerobot_write import LeRobotWriter
from kivla.data.world_dataset import generate_dataset

__all__ = ["LeRobotDataset", "LeRobotWriter", "decode_frames", "generate_dataset"]
