"""Video files: decode/encode/mux with PyAV, resumable chunked jobs, and the streaming run that
keeps memory flat on clips of any length (audio, frame rate and colour tags kept)."""
from .encode import CONTAINERS, EncodeSettings
from .files import (AudioInfo, VideoInfo, frame_to_rgb, is_image_path, iter_frames, preview_indices, probe_video,
                    read_frames_at, read_image, write_image, write_video)
from .jobs import (DEFAULT_CHUNK_SIZE, Chunk, VideoJob, default_work_dir, find_reference, job_settings, prepare_job,
                   settings_hash)
from .run import VideoResult, finish_job, process_chunk, run_job, stylize_image_file, stylize_video
from .segments import mux_job, to_uint8_hwc

__all__ = ["CONTAINERS", "DEFAULT_CHUNK_SIZE", "AudioInfo", "Chunk", "EncodeSettings", "VideoInfo", "VideoJob",
           "VideoResult", "default_work_dir", "find_reference", "finish_job", "frame_to_rgb", "is_image_path",
           "iter_frames", "job_settings", "mux_job", "prepare_job", "preview_indices", "probe_video",
           "process_chunk", "read_frames_at", "read_image", "run_job", "stylize_image_file", "stylize_video",
           "write_image", "write_video", "settings_hash", "to_uint8_hwc"]
