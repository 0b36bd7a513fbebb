defmodule Tinkex.RestClient do
  @moduledoc """
  Training runs and checkpoints (`Tinkex.ServiceClient.create_rest_client/1`). Every
  function returns `{:ok, %Tinkex.Future{}}` at once.
  """

  alias Tinkex.{Error, Future, Native}
  alias Tinkex.Types.{CheckpointsListResponse, TrainingRun, TrainingRunsResponse, WeightsInfoResponse}

  defstruct [:handle]
  @type t :: %__MODULE__{handle: reference}
  @type result :: {:ok, Future.t()} | {:error, Error.t()}

  @doc "The caller's training runs, newest first (`:limit` default 20, `:offset` 0)."
  @spec list_training_runs(t, keyword) :: result
  def list_training_runs(%__MODULE__{handle: h}, opts \\ []) do
    Native.rest_client_list_training_runs(h, Keyword.get(opts, :limit, 20), Keyword.get(opts, :offset, 0))
    |> Future.submitted(:list_training_runs, Future.json(&TrainingRunsResponse.from_json/1))
  end

  @doc "One training run by id."
  @spec get_training_run(t, String.t()) :: result
  def get_training_run(%__MODULE__{handle: h}, id) do
    Native.rest_client_get_training_run(h, id)
    |> Future.submitted(:get_training_run, Future.json(&TrainingRun.from_json/1))
  end

  @doc "The checkpoints of one training run."
  @spec list_checkpoints(t, String.t()) :: result
  def list_checkpoints(%__MODULE__{handle: h}, training_run_id) do
    Native.rest_client_list_checkpoints(h, training_run_id)
    |> Future.submitted(:list_checkpoints, Future.json(&CheckpointsListResponse.from_json/1))
  end

  @doc "All the caller's checkpoints, newest first (`:limit` default 100, `:offset` 0)."
  @spec list_user_checkpoints(t, keyword) :: result
  def list_user_checkpoints(%__MODULE__{handle: h}, opts \\ []) do
    Native.rest_client_list_user_checkpoints(h, Keyword.get(opts, :limit, 100), Keyword.get(opts, :offset, 0))
    |> Future.submitted(:list_user_checkpoints, Future.json(&CheckpointsListResponse.from_json/1))
  end

  @doc "Deletes the checkpoint at a `tinker://` path: a future of `:ok`."
  @spec delete_checkpoint(t, String.t()) :: result
  def delete_checkpoint(%__MODULE__{handle: h}, path) do
    Native.rest_client_delete_checkpoint(h, path)
    |> Future.submitted(:delete_checkpoint, fn _ -> {:ok, :ok} end)
  end

  @doc "Base model and LoRA settings of the checkpoint at a `tinker://` path."
  @spec get_weights_info(t, String.t()) :: result
  def get_weights_info(%__MODULE__{handle: h}, path) do
    Native.rest_client_get_weights_info(h, path)
    |> Future.submitted(:get_weights_info, Future.json(&WeightsInfoResponse.from_json/1))
  end
end
