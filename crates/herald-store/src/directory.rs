//! Users, groups and send rules.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use herald_core::notification::now_millis;
use herald_core::store::{DirectoryStore, GroupRecord, StoreResult, UserRecord};
use herald_core::{GroupName, SendRule, Username};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};

use crate::SeaStore;
use crate::convert;
use crate::entity::{group, send_rule, user, user_group};
use crate::error::{StoreErrorExt, is_unique_violation, to_store_error};

#[async_trait]
impl DirectoryStore for SeaStore {
    async fn find_user(&self, username: &Username) -> StoreResult<Option<UserRecord>> {
        let Some(row) = user::Entity::find_by_id(username.as_str())
            .one(&self.db)
            .await
            .context("load a user")?
        else {
            return Ok(None);
        };
        let groups = user_group::Entity::find()
            .filter(user_group::Column::Username.eq(username.as_str()))
            .all(&self.db)
            .await
            .context("load a user's groups")?;
        let groups = groups
            .iter()
            .map(|g| convert::group_name(&g.group_name))
            .collect::<StoreResult<_>>()?;
        Ok(Some(user_record(row, groups)?))
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = user::Entity::find()
            .order_by_asc(user::Column::Username)
            .all(&self.db)
            .await
            .context("list users")?;
        let memberships = user_group::Entity::find()
            .all(&self.db)
            .await
            .context("list memberships")?;

        let mut groups: BTreeMap<String, BTreeSet<GroupName>> = BTreeMap::new();
        for m in memberships {
            groups
                .entry(m.username)
                .or_default()
                .insert(convert::group_name(&m.group_name)?);
        }
        rows.into_iter()
            .map(|row| {
                let member_of = groups.remove(&row.username).unwrap_or_default();
                user_record(row, member_of)
            })
            .collect()
    }

    async fn create_user(&self, record: &UserRecord) -> StoreResult<bool> {
        let txn = self.db.begin().await.context("begin creating a user")?;

        let row = user::ActiveModel {
            username: Set(record.username.to_string()),
            password_hash: Set(record.password_hash.clone()),
            is_admin: Set(record.admin),
            created_at: Set(record.created_at),
        };
        match user::Entity::insert(row).exec_without_returning(&txn).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(false),
            Err(e) => return Err(to_store_error(e, "insert a user")),
        }
        insert_memberships(&txn, &record.username, &record.groups).await?;

        txn.commit().await.context("commit a new user")?;
        Ok(true)
    }

    async fn set_user_groups(
        &self,
        username: &Username,
        groups: &BTreeSet<GroupName>,
    ) -> StoreResult<bool> {
        let txn = self
            .db
            .begin()
            .await
            .context("begin changing a user's groups")?;

        // Write first: on SQLite the first statement of a transaction decides whether it takes
        // the write lock under the busy timeout or fails later on upgrade.
        user_group::Entity::delete_many()
            .filter(user_group::Column::Username.eq(username.as_str()))
            .exec(&txn)
            .await
            .context("clear a user's groups")?;
        if user::Entity::find_by_id(username.as_str())
            .one(&txn)
            .await
            .context("load a user")?
            .is_none()
        {
            return Ok(false);
        }
        insert_memberships(&txn, username, groups).await?;

        txn.commit().await.context("commit a user's groups")?;
        Ok(true)
    }

    async fn set_password_hash(&self, username: &Username, hash: &str) -> StoreResult<bool> {
        let result = user::Entity::update_many()
            .col_expr(
                user::Column::PasswordHash,
                sea_orm::sea_query::Expr::value(hash),
            )
            .filter(user::Column::Username.eq(username.as_str()))
            .exec(&self.db)
            .await
            .context("update a password hash")?;
        Ok(result.rows_affected == 1)
    }

    async fn remove_user(&self, username: &Username) -> StoreResult<bool> {
        let txn = self.db.begin().await.context("begin removing a user")?;
        user_group::Entity::delete_many()
            .filter(user_group::Column::Username.eq(username.as_str()))
            .exec(&txn)
            .await
            .context("remove a user's groups")?;
        let result = user::Entity::delete_by_id(username.as_str())
            .exec(&txn)
            .await
            .context("remove a user")?;
        txn.commit().await.context("commit removing a user")?;
        Ok(result.rows_affected == 1)
    }

    async fn find_group(&self, name: &GroupName) -> StoreResult<Option<GroupRecord>> {
        let row = group::Entity::find_by_id(name.as_str())
            .one(&self.db)
            .await
            .context("load a group")?;
        row.map(group_record).transpose()
    }

    async fn list_groups(&self) -> StoreResult<Vec<GroupRecord>> {
        let rows = group::Entity::find()
            .order_by_asc(group::Column::Name)
            .all(&self.db)
            .await
            .context("list groups")?;
        rows.into_iter().map(group_record).collect()
    }

    async fn create_group(&self, name: &GroupName, display_name: &str) -> StoreResult<bool> {
        let row = group::ActiveModel {
            name: Set(name.to_string()),
            display_name: Set(display_name.to_owned()),
            last_seq: Set(0),
            created_at: Set(now_millis()),
        };
        match group::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(to_store_error(e, "insert a group")),
        }
    }

    async fn list_rules(&self) -> StoreResult<Vec<SendRule>> {
        let rows = send_rule::Entity::find()
            .order_by_asc(send_rule::Column::FromGroup)
            .order_by_asc(send_rule::Column::ToGroup)
            .all(&self.db)
            .await
            .context("list send rules")?;
        rows.iter()
            .map(|r| {
                Ok(SendRule {
                    from: convert::group_name(&r.from_group)?,
                    to: convert::group_name(&r.to_group)?,
                })
            })
            .collect()
    }

    async fn add_rule(&self, rule: &SendRule) -> StoreResult<bool> {
        let row = send_rule::ActiveModel {
            from_group: Set(rule.from.to_string()),
            to_group: Set(rule.to.to_string()),
        };
        match send_rule::Entity::insert(row)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(to_store_error(e, "insert a send rule")),
        }
    }

    async fn remove_rule(&self, rule: &SendRule) -> StoreResult<bool> {
        let result = send_rule::Entity::delete_many()
            .filter(send_rule::Column::FromGroup.eq(rule.from.as_str()))
            .filter(send_rule::Column::ToGroup.eq(rule.to.as_str()))
            .exec(&self.db)
            .await
            .context("remove a send rule")?;
        Ok(result.rows_affected == 1)
    }
}

async fn insert_memberships(
    txn: &sea_orm::DatabaseTransaction,
    username: &Username,
    groups: &BTreeSet<GroupName>,
) -> StoreResult<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let rows = groups.iter().map(|g| user_group::ActiveModel {
        username: Set(username.to_string()),
        group_name: Set(g.to_string()),
    });
    user_group::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await
        .context("insert a user's groups")?;
    Ok(())
}

fn user_record(row: user::Model, groups: BTreeSet<GroupName>) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        username: convert::username(&row.username)?,
        password_hash: row.password_hash,
        groups,
        admin: row.is_admin,
        created_at: row.created_at,
    })
}

fn group_record(row: group::Model) -> StoreResult<GroupRecord> {
    Ok(GroupRecord {
        name: convert::group_name(&row.name)?,
        display_name: row.display_name,
        seq: u64::try_from(row.last_seq).unwrap_or(0),
    })
}
