//! Groups, users, send rules, notifications, read marks and the per-group event log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Groups {
    Table,
    Name,
    DisplayName,
    /// Seq of the group's newest event. Incrementing it row-locks the group, which is what
    /// makes concurrent writers commit a group's events in seq order.
    LastSeq,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Username,
    PasswordHash,
    IsAdmin,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UserGroups {
    Table,
    Username,
    GroupName,
}

#[derive(DeriveIden)]
enum SendRules {
    Table,
    FromGroup,
    ToGroup,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    Content,
    Sender,
    SenderGroup,
    ReceiverGroup,
    Status,
    Priority,
    ConfirmedBy,
    ConfirmedAt,
    CreatedAt,
    IdempotencyKey,
    IdempotencyFingerprint,
}

#[derive(DeriveIden)]
enum NotificationReads {
    Table,
    NotificationId,
    Username,
    ReadAt,
}

#[derive(DeriveIden)]
enum GroupEvents {
    Table,
    GroupName,
    Seq,
    Kind,
    NotificationId,
    Frame,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Groups::Table)
                    .col(string_len(Groups::Name, 64).primary_key())
                    .col(text(Groups::DisplayName))
                    .col(big_integer(Groups::LastSeq).default(0))
                    .col(timestamp_with_time_zone(Groups::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(string_len(Users::Username, 64).primary_key())
                    .col(text(Users::PasswordHash))
                    .col(boolean(Users::IsAdmin).default(false))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UserGroups::Table)
                    .col(string_len(UserGroups::Username, 64))
                    .col(string_len(UserGroups::GroupName, 64))
                    .primary_key(
                        Index::create()
                            .col(UserGroups::Username)
                            .col(UserGroups::GroupName),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UserGroups::Table, UserGroups::Username)
                            .to(Users::Table, Users::Username)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(UserGroups::Table, UserGroups::GroupName)
                            .to(Groups::Table, Groups::Name),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(SendRules::Table)
                    .col(string_len(SendRules::FromGroup, 64))
                    .col(string_len(SendRules::ToGroup, 64))
                    .primary_key(
                        Index::create()
                            .col(SendRules::FromGroup)
                            .col(SendRules::ToGroup),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(SendRules::Table, SendRules::FromGroup)
                            .to(Groups::Table, Groups::Name),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(SendRules::Table, SendRules::ToGroup)
                            .to(Groups::Table, Groups::Name),
                    )
                    .to_owned(),
            )
            .await?;

        // Sender and group names are plain text, not foreign keys: a notification outlives the
        // user who sent it, for the audit trail.
        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .col(big_pk_auto(Notifications::Id))
                    .col(text(Notifications::Content))
                    .col(string_len(Notifications::Sender, 64))
                    .col(string_len(Notifications::SenderGroup, 64))
                    .col(string_len(Notifications::ReceiverGroup, 64))
                    .col(string_len(Notifications::Status, 16))
                    .col(string_len(Notifications::Priority, 16))
                    .col(string_len_null(Notifications::ConfirmedBy, 64))
                    .col(timestamp_with_time_zone_null(Notifications::ConfirmedAt))
                    .col(timestamp_with_time_zone(Notifications::CreatedAt))
                    .col(string_len_null(Notifications::IdempotencyKey, 255))
                    .col(string_len_null(Notifications::IdempotencyFingerprint, 64))
                    .to_owned(),
            )
            .await?;

        // The list query filters by either audience group and pages by id, newest first.
        for (name, column) in [
            (
                "idx_notifications_receiver_id",
                Notifications::ReceiverGroup,
            ),
            (
                "idx_notifications_sender_group_id",
                Notifications::SenderGroup,
            ),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Notifications::Table)
                        .col(column)
                        .col(Notifications::Id)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_created_at")
                    .table(Notifications::Table)
                    .col(Notifications::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_notifications_status_id")
                    .table(Notifications::Table)
                    .col(Notifications::Status)
                    .col(Notifications::Id)
                    .to_owned(),
            )
            .await?;
        // NULL keys are distinct on both backends, so only keyed requests are constrained.
        manager
            .create_index(
                Index::create()
                    .name("uq_notifications_sender_idempotency_key")
                    .table(Notifications::Table)
                    .col(Notifications::Sender)
                    .col(Notifications::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NotificationReads::Table)
                    .col(big_integer(NotificationReads::NotificationId))
                    .col(string_len(NotificationReads::Username, 64))
                    .col(timestamp_with_time_zone(NotificationReads::ReadAt))
                    .primary_key(
                        Index::create()
                            .col(NotificationReads::NotificationId)
                            .col(NotificationReads::Username),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(NotificationReads::Table, NotificationReads::NotificationId)
                            .to(Notifications::Table, Notifications::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_notification_reads_username")
                    .table(NotificationReads::Table)
                    .col(NotificationReads::Username)
                    .col(NotificationReads::NotificationId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(GroupEvents::Table)
                    .col(string_len(GroupEvents::GroupName, 64))
                    .col(big_integer(GroupEvents::Seq))
                    .col(string_len(GroupEvents::Kind, 32))
                    .col(big_integer(GroupEvents::NotificationId))
                    .col(text(GroupEvents::Frame))
                    .col(timestamp_with_time_zone(GroupEvents::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(GroupEvents::GroupName)
                            .col(GroupEvents::Seq),
                    )
                    .to_owned(),
            )
            .await?;

        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            GroupEvents::Table.into_iden(),
            NotificationReads::Table.into_iden(),
            Notifications::Table.into_iden(),
            SendRules::Table.into_iden(),
            UserGroups::Table.into_iden(),
            Users::Table.into_iden(),
            Groups::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
